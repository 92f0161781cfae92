"""Preprocessing MB/s and peak memory on a large corpus (>= 200 MB): memory stays flat as the
corpus grows and does not depend on the chunk size, and more Ray tasks run faster.

Each configuration runs in a fresh process so its ru_maxrss belongs to it alone. The in-process
rows run the very same chunk tasks in the driver, so their peak RSS is the whole pipeline's
memory at two corpus sizes; the Ray rows show the speed-up from parallel tasks and the largest
task process's resident memory (sampled every 50 ms). The clock starts once Ray is up and one task
per CPU has run (booting Ray's worker processes and importing the library cost ~1-1.5 CPU-seconds
per worker, paid once per cluster, not per dataset). For the speed-up, each row also says where
the machine's CPU time went while it ran (from /proc): this run's processes (driver, Ray, tasks)
vs everything else on the box, since a 2-core machine shared with other work cannot give a
2-CPU run two whole cores.

    python benchmarks/bench_preprocess.py [--mb 200] [--chunk-mb 8] [--tokenizer char]
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
corpus, root, cpus, chunk_mb, kind = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
if cpus:  # a started cluster: its workers booted and the library imported (as on a cluster that is up)
    import ray
    ensure_ray(num_cpus=cpus)

    @ray.remote(num_cpus=1)
    def warm():
        import seqgen.data.text  # noqa: F401
        time.sleep(1.0)  # so that the cpus calls overlap, one per worker process
        return os.getpid()

    assert len(set(ray.get([warm.remote() for _ in range(cpus)]))) == cpus
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

idle_worker_mb = 0.0

def watch():  # the largest Ray task process's resident memory, sampled every 50 ms, and the
    global peak_task_mb, idle_worker_mb  # largest of a worker between tasks (libraries, no chunk)
    while not done.wait(0.05):
        for pid in descendants():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read()
                if not cmd.startswith(b"ray::"):
                    continue
                with open(f"/proc/{pid}/status") as f:
                    rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
                peak_task_mb = max(peak_task_mb, rss / 1024)
                if cmd.startswith(b"ray::IDLE"):
                    idle_worker_mb = max(idle_worker_mb, rss / 1024)
            except (OSError, StopIteration):
                pass

def machine_cpu() -> tuple[float, float]:  # (busy, total) seconds of all CPUs since boot
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - ticks[3] - ticks[4]) / hz, sum(ticks) / hz

def cpu_by_pid() -> dict:  # CPU seconds of this process and its tree (Ray's daemons, workers)
    out = {}
    for pid in [os.getpid(), *descendants()]:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                worker = f.read().startswith(b"ray::")
            out[pid] = (worker, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
        except (OSError, IndexError, ValueError):
            pass
    return out

def our_cpu() -> float:
    return sum(cpu for _, cpu in cpu_by_pid().values())

threading.Thread(target=watch, daemon=True).start()
busy0, total0 = machine_cpu()
before = cpu_by_pid()
ours0 = our_cpu()
start = time.perf_counter()
spec = TextSpec(kind, {"train": [corpus]}, valid_fraction=0.01, chunk_bytes=int(chunk_mb * (1 << 20)))
m = preprocess_text(Storage.from_url(root), "big", spec, use_ray=bool(cpus))
seconds = time.perf_counter() - start
ours = our_cpu() - ours0
after = cpu_by_pid()  # the task work each Ray worker process did (how evenly the tasks spread)
workers = sorted((cpu - before.get(pid, (0, 0.0))[1] for pid, (w, cpu) in after.items() if w), reverse=True)
busy1, total1 = machine_cpu()
done.set()
print(json.dumps({"seconds": seconds, "driver_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "task_peak_mb": peak_task_mb if cpus else None, "idle_worker_mb": idle_worker_mb if cpus else None,
                  "tokens": m["splits"]["train"]["tokens"],
                  "our_cpu_s": ours, "worker_cpu_s": [round(c, 2) for c in workers if c >= 0.05], "other_cpu_s": max(busy1 - busy0 - ours, 0.0), "idle_cpu_s": (total1 - total0) - (busy1 - busy0)}))
"""


def make_corpus(path: Path, mb: int) -> None:
    text = (Path(__file__).resolve().parents[1] / "seqgen" / "assets" / "tinyshakespeare.txt").read_bytes()
    with open(path, "wb") as f:
        while f.tell() < mb << 20:
            f.write(text)


def run(corpus: Path, cpus: int, chunk_mb: float, kind: str) -> dict:
    with tempfile.TemporaryDirectory() as root:
        out = subprocess.run([sys.executable, "-c", CHILD, str(corpus), root, str(cpus), str(chunk_mb), kind],
                             capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"preprocessing {corpus} with {cpus} Ray CPUs failed:\n{out.stderr}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["mb_per_s"] = os.path.getsize(corpus) / (1 << 20) / r["seconds"]
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mb", type=int, default=200)
    p.add_argument("--chunk-mb", type=float, default=8.0)
    p.add_argument("--tokenizer", default="char")
    p.add_argument("--repeats", type=int, default=2, help="1-CPU / 2-CPU pairs, interleaved (the load drifts)")
    a = p.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as d:
        small, big = Path(d) / "small.txt", Path(d) / "big.txt"
        make_corpus(small, max(a.mb // 4, 8))
        make_corpus(big, a.mb)
        mb = big.stat().st_size >> 20
        rows[f"in-process, {small.stat().st_size >> 20} MB"] = run(small, 0, a.chunk_mb, a.tokenizer)
        rows[f"in-process, {mb} MB"] = run(big, 0, a.chunk_mb, a.tokenizer)
        rows[f"in-process, {mb} MB, chunks of {4 * a.chunk_mb:g} MB"] = run(big, 0, 4 * a.chunk_mb, a.tokenizer)
        for i in range(a.repeats):
            rows[f"Ray 1 CPU, {mb} MB, run {i + 1}"] = run(big, 1, a.chunk_mb, a.tokenizer)
            rows[f"Ray 2 CPUs, {mb} MB, run {i + 1}"] = run(big, 2, a.chunk_mb, a.tokenizer)
    one = [r["seconds"] for k, r in rows.items() if k.startswith("Ray 1 CPU")]
    two = [r["seconds"] for k, r in rows.items() if k.startswith("Ray 2 CPUs")]
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    save("preprocess", {"tokenizer": a.tokenizer, "chunk_mb": a.chunk_mb, "load_average_after": load,
                        "speedup_2_vs_1_cpu": round(sum(one) / sum(two), 3), "rows": rows})


if __name__ == "__main__":
    main()
