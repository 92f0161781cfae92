"""Serve endpoint throughput: batched generation (max_batch_size 32) vs one request at a time (1).

A realistic-size text model (2 x 256 LSTM over the Tiny Shakespeare characters; random weights,
throughput does not depend on them) is saved with ``seqgen.checkpoint.save`` and served on
127.0.0.1 by ``seqgen.serve.app.build_app``. For each mode, ``--clients`` concurrent HTTP
clients (asyncio + httpx, closed loop: each sends its next request when the last one is answered)
ask for ``--length``-symbol samples for ``--duration`` seconds. Only answers that arrive inside
that window count; requests still in flight at its end are drained (bounded) and not counted.

    python benchmarks/bench_serve.py                    # 32 clients, length 200, 20 s per mode
    python benchmarks/bench_serve.py --duration 10 --modes 32:0.01 1 --hidden-size 512

A mode is ``max_batch_size[:batch_wait_timeout_s]`` (default wait 0.01 s, build_app's default).

Prints a Markdown table and writes ``benchmarks/results/serve.json``. Absolute numbers are noisy
on shared machines; the ratio between the two modes, measured in one run, is the result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "serve.json"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_checkpoint(root: str, hidden_size: int, num_layers: int) -> str:
    """A checkpoint directory with random weights and the Tiny Shakespeare character vocabulary."""
    import torch

    from seqgen import config
    from seqgen.data.presets import BUNDLED_SHAKESPEARE
    from seqgen.data.tokenizers import Vocabulary
    from seqgen.models import build_model
    from seqgen import checkpoint

    text = Path(BUNDLED_SHAKESPEARE).read_text(encoding="utf-8")
    vocab = Vocabulary("char", sorted(set(text)))
    cfg = config.load(None, ["run_name=bench-serve", f"model.hidden_size={hidden_size}",
                             f"model.num_layers={num_layers}"])
    meta = {"vocab": vocab.to_json()}
    torch.manual_seed(0)
    model = build_model(cfg, meta)
    url = os.path.join(root, "runs", "bench-serve", checkpoint.checkpoint_name(0))
    checkpoint.save(url, cfg, meta, model.state_dict(), {}, {"step": 0, "evals": []})
    return url


async def load(url: str, clients: int, length: int, duration: float, drain_s: float) -> dict:
    """Closed-loop load from ``clients`` concurrent clients; counts answers inside the window."""
    import httpx

    done: list[tuple[float, float, int]] = []  # (finish time, latency, chars)
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=duration + drain_s + 60) as http:
        t0 = time.perf_counter()
        deadline = t0 + duration

        async def client(c: int):
            k = 0
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                r = await http.post("/generate", json={"length": length, "seed": c * 1_000_003 + k})
                k += 1
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
                    continue
                samples = r.json()["samples"]
                done.append((time.perf_counter(), time.perf_counter() - start, sum(len(s) for s in samples)))

        tasks = [asyncio.create_task(client(c)) for c in range(clients)]
        _, pending = await asyncio.wait(tasks, timeout=duration + drain_s)
        for t in pending:  # bounded: whatever has not drained by now is abandoned
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    inside = [(f, lat, n) for f, lat, n in done if f <= deadline]
    latencies = sorted(lat for _, lat, _ in inside)
    return {
        "window_s": duration,
        "samples": len(inside),
        "chars": sum(n for _, _, n in inside),
        "samples_per_s": len(inside) / duration,
        "chars_per_s": sum(n for _, _, n in inside) / duration,
        "latency_p50_s": statistics.median(latencies) if latencies else None,
        "latency_p95_s": latencies[int(0.95 * (len(latencies) - 1))] if latencies else None,
        "errors": len(errors),
        "first_errors": errors[:3],
        "abandoned_clients": len(pending),
    }


def parse_mode(mode: str) -> tuple[int, float]:
    size, _, wait = mode.partition(":")
    return int(size), float(wait) if wait else 0.01


def run_mode(ckpt: str, base: str, max_batch_size: int, batch_wait: float, args) -> dict:
    import httpx
    from ray import serve

    from seqgen.serve.app import build_app

    app = build_app(ckpt, max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait,
                    num_cpus=args.replica_cpus)
    serve.run(app, name="bench-serve", route_prefix="/")
    httpx.post(f"{base}/generate", json={"length": 20}, timeout=120).raise_for_status()  # warm-up
    before = httpx.get(f"{base}/stats", timeout=60).json()
    result = asyncio.run(load(base, args.clients, args.length, args.duration, args.drain))
    after = httpx.get(f"{base}/stats", timeout=60).json()
    info = httpx.get(f"{base}/info", timeout=60).json()
    sizes = {int(k): v - before["batch_sizes"].get(k, 0) for k, v in after["batch_sizes"].items()}
    batches = sum(sizes.values())
    result.update(
        max_batch_size=max_batch_size,
        batch_wait_timeout_s=batch_wait,
        batches=batches,
        mean_batch_size=(sum(k * v for k, v in sizes.items()) / batches) if batches else 0.0,
        largest_batch=max((k for k, v in sizes.items() if v), default=0),
        replica_torch_threads=info["torch_threads"],
    )
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--length", type=int, default=200)
    p.add_argument("--duration", type=float, default=20.0, help="measurement window per mode (s)")
    p.add_argument("--drain", type=float, default=60.0, help="max wait for in-flight requests after it (s)")
    p.add_argument("--modes", nargs="+", default=["32", "1"],
                   help="max_batch_size[:batch_wait_timeout_s] (default wait 0.01)")
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--replica-cpus", type=float, default=1.0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    from seqgen.runtime import apply_local_env

    apply_local_env()
    import ray
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-serve-") as root:
            ckpt = make_checkpoint(root, args.hidden_size, args.num_layers)
            port = free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            base = f"http://127.0.0.1:{port}"
            rows = []
            for mode in args.modes:
                mb, wait = parse_mode(mode)
                print(f"max_batch_size={mb} wait={wait:g}s: {args.clients} clients x length {args.length} "
                      f"for {args.duration:g} s ...", file=sys.stderr, flush=True)
                rows.append(run_mode(ckpt, base, mb, wait, args))
            serve.shutdown()
    finally:
        ray.shutdown()

    single = [r for r in rows if r["max_batch_size"] == 1]
    speedups = {}
    if single and single[0]["samples_per_s"] > 0:
        for r in rows:
            if r["max_batch_size"] > 1:
                key = f"{r['max_batch_size']}@{r['batch_wait_timeout_s']:g}s_vs_1"
                speedups[key] = r["samples_per_s"] / single[0]["samples_per_s"]
    import torch

    out = {
        "benchmark": "serve",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "ray": ray.__version__, "load_avg_1m": os.getloadavg()[0]},
        "model": {"cell": "lstm", "num_layers": args.num_layers, "hidden_size": args.hidden_size,
                  "vocab": "tinyshakespeare chars", "weights": "random"},
        "settings": {"clients": args.clients, "length": args.length, "duration_s": args.duration,
                     "modes": args.modes, "replica_cpus": args.replica_cpus,
                     "transport": "HTTP over 127.0.0.1"},
        "results": rows,
        "speedup_samples_per_s": speedups,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")

    print("| max_batch_size | batch wait (s) | clients | length | samples/s | chars/s | p50 latency (s) "
          "| mean batch | errors |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        p50 = f"{r['latency_p50_s']:.2f}" if r["latency_p50_s"] is not None else "-"
        wait = f"{r['batch_wait_timeout_s']:g}" if r["max_batch_size"] > 1 else "-"
        print(f"| {r['max_batch_size']} | {wait} | {args.clients} | {args.length} | {r['samples_per_s']:.2f} | "
              f"{r['chars_per_s']:.0f} | {p50} | {r['mean_batch_size']:.1f} | {r['errors']} |")
    for key, value in speedups.items():
        print(f"\nbatching speed-up in samples/s ({key}): {value:.1f}x", end="")
    print(f"\nresults in {args.out}")
    return out


if __name__ == "__main__":
    main()
