"""Legibility speed (the bundled synthesis model and recognizer, or the given ones):

1. legibility evaluation throughput: lines written and read per second (`legibility.measure`,
   the bundled 20 texts at bias 0.75), and how the time splits between writing and reading;
2. the latency of writing one line as the best of 4 candidates (rows of one batch, then read) vs
   one candidate: the ratio, interleaved over repeats.

    python benchmarks/bench_legibility.py [--repeats 5] [--synthesis CKPT] [--recognizer CKPT]
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import save
from seqgen.catalog import BUNDLED_HANDWRITING, load_model
from seqgen.handwriting import legibility
from seqgen.handwriting.recognizer import read_steps
from seqgen.handwriting.sampling import synthesize


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--synthesis", default=str(BUNDLED_HANDWRITING))
    p.add_argument("--recognizer", default=None)
    a = p.parse_args()
    synth, s = load_model(a.synthesis)
    reader, r = load_model(a.recognizer or legibility.bundled_recognizer())
    texts = legibility.read_texts(legibility.DEFAULT_TEXTS)

    t0 = time.perf_counter()
    written = synthesize(synth, s.meta, texts, bias=0.75, seed=0)
    t1 = time.perf_counter()
    read_steps(reader, r.meta, [w.offsets for w in written])
    t2 = time.perf_counter()
    write_s, read_s = t1 - t0, t2 - t1

    one, four = [], []
    for i in range(a.repeats):  # interleaved, so drift on a shared box hits both alike
        for k, out in ((1, one), (4, four)):
            start = time.perf_counter()
            legibility.write_best(synth, s.meta, reader, r.meta, ["Pack my box with five dozen liquor jugs"], 0.75,
                                  seed=i, best_of=k)
            out.append(time.perf_counter() - start)
    result = {
        "texts": len(texts),
        "evaluation_lines_per_s": len(texts) / (write_s + read_s),
        "write_s": write_s, "read_s": read_s, "read_share": read_s / (write_s + read_s),
        "best_of_1_s": statistics.median(one), "best_of_4_s": statistics.median(four),
        "best_of_4_vs_1": statistics.median(four) / statistics.median(one),
        "repeats": a.repeats,
    }
    save("legibility", result)


if __name__ == "__main__":
    main()
