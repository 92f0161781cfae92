"""Training memory does not grow with the corpus: peak RSS of the same model trained 50 steps on a
50 MB and a 400 MB byte corpus (Hutter preset: bytes, 90/5/5), streams read lazily from the shards.

The corpora are Tiny Shakespeare repeated with 2% of the bytes replaced by random ones, written to
a temporary directory and preprocessed there (nothing is kept). Each training runs in a fresh
process (``train.num_workers=0``: the loop runs in that process, so its ``ru_maxrss`` is the whole
training's peak), after the same warm-up import of the libraries. For comparison, the row
``eager (old layout)`` loads the 50 MB corpus's train split and lays it out with ``batchify``, as
training did before the lazy reader (int32 ids + an int64 tensor: 12 bytes per byte of corpus).

    python benchmarks/bench_memory.py [--sizes 50 400] [--steps 50]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import save

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
from seqgen import config
from seqgen.storage import Storage
from seqgen.runtime import ensure_ray
mode, root, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
st = Storage.from_url(root)
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if mode == "eager":
    from seqgen.data.text import load_manifest, load_split
    from seqgen.evaluate import batchify
    import seqgen.train.loop, seqgen.models.text
    baseline = peak_mb()
    rows = batchify(load_split(st, load_manifest(st, "wiki"), "train"), 32)
    print(json.dumps({"peak_mb": peak_mb(), "baseline_mb": baseline, "tokens": rows.numel()}))
    sys.exit()
from seqgen.train.run import train
import seqgen.train.loop, seqgen.models.text  # the libraries, before the baseline
ensure_ray(num_cpus=2)
baseline = peak_mb()
cfg = config.load(str(__import__("pathlib").Path(sys.argv[4])), [
    "dataset=wiki", "run_name=mem", "model.hidden_size=256", "model.num_layers=2", "train.batch_size=32",
    f"train.max_steps={steps}", "train.eval_every=25", "train.eval_tokens=200000", "train.max_minutes=0",
    "train.progress=false", "train.num_workers=0"])
start = time.perf_counter()
train(cfg, st)
print(json.dumps({"peak_mb": peak_mb(), "baseline_mb": baseline, "seconds": time.perf_counter() - start}))
"""


def make_corpus(path: Path, mb: int, seed: int = 0) -> None:
    """Tiny Shakespeare repeated to ``mb`` MB, 2% of its bytes replaced by random bytes."""
    text = np.frombuffer((ROOT / "seqgen" / "assets" / "tinyshakespeare.txt").read_bytes(), np.uint8)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        written = 0
        while written < mb << 20:
            piece = text[: min(len(text), (mb << 20) - written)].copy()
            noise = rng.random(len(piece)) < 0.02
            piece[noise] = rng.integers(0, 256, int(noise.sum()), dtype=np.uint8)
            f.write(piece.tobytes())
            written += len(piece)


def child(mode: str, root: str, steps: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, mode, root, str(steps), str(ROOT / "seqgen/configs/hutter.yaml")],
                         capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"{mode} on {root} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[50, 400], help="corpus sizes in MB")
    p.add_argument("--steps", type=int, default=50)
    a = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from seqgen.data.presets import text_spec
    from seqgen.data.text import preprocess_text
    from seqgen.storage import Storage

    rows = {}
    for mb in a.sizes:
        with tempfile.TemporaryDirectory() as d:
            corpus = Path(d) / "corpus"
            make_corpus(corpus, mb)
            root = str(Path(d) / "store")
            t0 = time.perf_counter()
            m = preprocess_text(Storage.from_url(root), "wiki", text_spec("wiki", [str(corpus)], preset="hutter"),
                                use_ray=False)
            prep = time.perf_counter() - t0
            r = child("train", root, a.steps)
            rows[f"train {a.steps} steps, {mb} MB corpus"] = {
                **{k: round(v, 1) for k, v in r.items()}, "train_tokens": m["splits"]["train"]["tokens"],
                "preprocess_s": round(prep, 1)}
            if mb == min(a.sizes):
                rows[f"eager (old layout), {mb} MB corpus"] = {k: round(v, 1) for k, v in child("eager", root, 0).items()}
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    save("memory", {"model": "hutter.yaml with 2 x 256 LSTM, batch 32 x 100, evaluation on 200k valid tokens every 25 steps",
                    "load_average": load, "rows": rows})


if __name__ == "__main__":
    main()
