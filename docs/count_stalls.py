"""Count stalled lines of synthesis checkpoints (docs/handwriting.md).

A line stalls when the window stops before its last two characters (the final phi(t, u) peaks
earlier), so the line runs to the hard limit instead of ending by the stop rule.

    python docs/count_stalls.py CHECKPOINT [CHECKPOINT ...]
"""

from __future__ import annotations

import argparse

from seqgen.catalog import load_model
from seqgen.handwriting.legibility import stalled as is_stalled
from seqgen.handwriting.sampling import synthesize

TEXTS = ["a quick brown fox jumps", "handwriting synthesis", "the lazy dog", "over the hills and far away"]
SEEDS = [1000 + 7 * i for i in range(10)]
BIASES = (0.75, 1.5, 2.0)


def stalled(checkpoint: str, bias: float) -> tuple[int, int]:
    model, loaded = load_model(checkpoint)
    lines = [r for seed in SEEDS for r in synthesize(model, loaded.meta, TEXTS, bias=bias, seed=seed)]
    return sum(map(is_stalled, lines)), len(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="checkpoint directories of synthesis models")
    for url in p.parse_args().checkpoints:
        print(url, *(f"bias {b}: %d/%d" % stalled(url, b) for b in BIASES), flush=True)


if __name__ == "__main__":
    main()
