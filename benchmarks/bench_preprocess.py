"""Preprocessing MB/s and peak memory on a large corpus (>= 200 MB): memory stays flat as the
corpus grows, and more Ray tasks run faster.

Each configuration runs in a fresh process so its ru_maxrss belongs to it alone. The in-process
rows run the very same chunk tasks in the driver, so their peak RSS is the whole pipeline's
memory at two corpus sizes; the Ray rows show the speed-up from parallel tasks and the largest
task process's resident memory (sampled).

    python benchmarks/bench_preprocess.py [--mb 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import save

CHILD = r"""
import json, os, resource, sys, threading, time
from seqgen.runtime import ensure_ray
from seqgen.storage import Storage
from seqgen.data.text import TextSpec, preprocess_text
corpus, root, cpus = sys.argv[1], sys.argv[2], int(sys.argv[3])
if cpus:
    ensure_ray(num_cpus=cpus)
peak_task_mb, done = 0.0, threading.Event()

def descendants() -> list[int]:  # this process's tree, from /proc (Ray workers hang below the raylet)
    parent = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parent[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            pass
    tree, frontier = [], [os.getpid()]
    while frontier:
        frontier = [p for p, pp in parent.items() if pp in frontier]
        tree += frontier
    return tree

def watch():  # the largest Ray task process's resident memory, sampled every 50 ms
    global peak_task_mb
    while not done.wait(0.05):
        for pid in descendants():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if not f.read().startswith(b"ray::"):
                        continue
                with open(f"/proc/{pid}/status") as f:
                    rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
                peak_task_mb = max(peak_task_mb, rss / 1024)
            except (OSError, StopIteration):
                pass

threading.Thread(target=watch, daemon=True).start()
start = time.perf_counter()
m = preprocess_text(Storage.from_url(root), "big", TextSpec("char", {"train": [corpus]}, valid_fraction=0.01),
                    use_ray=bool(cpus))
seconds = time.perf_counter() - start
done.set()
print(json.dumps({"seconds": seconds, "driver_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "task_peak_mb": peak_task_mb if cpus else None, "tokens": m["splits"]["train"]["tokens"]}))
"""


def make_corpus(path: Path, mb: int) -> None:
    text = (Path(__file__).resolve().parents[1] / "seqgen" / "assets" / "tinyshakespeare.txt").read_bytes()
    with open(path, "wb") as f:
        while f.tell() < mb << 20:
            f.write(text)


def run(corpus: Path, cpus: int) -> dict:
    with tempfile.TemporaryDirectory() as root:
        out = subprocess.run([sys.executable, "-c", CHILD, str(corpus), root, str(cpus)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"preprocessing {corpus} with {cpus} Ray CPUs failed:\n{out.stderr}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["mb_per_s"] = round(os.path.getsize(corpus) / (1 << 20) / r["seconds"], 2)
    return r


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mb", type=int, default=200)
    a = p.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as d:
        small, big = Path(d) / "small.txt", Path(d) / "big.txt"
        make_corpus(small, max(a.mb // 4, 8))
        make_corpus(big, a.mb)
        rows[f"in-process, {small.stat().st_size >> 20} MB"] = run(small, 0)
        rows[f"in-process, {big.stat().st_size >> 20} MB"] = run(big, 0)
        rows[f"Ray 1 CPU, {big.stat().st_size >> 20} MB"] = run(big, 1)
        rows[f"Ray 2 CPUs, {big.stat().st_size >> 20} MB"] = run(big, 2)
    save("preprocess", {"rows": rows})


if __name__ == "__main__":
    main()
