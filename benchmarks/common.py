"""Shared by the benchmarks: machine description and result files."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} x {cpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def save(name: str, result: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    result = {"machine": machine(), **result}
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def pipeline_steady_state(result) -> tuple[int, float]:
    """(steps, seconds) a seqgen training run spent in training steps after its first evaluation:
    the pipeline's own step timer (evaluation and checkpoint I/O excluded), warm-up left out."""
    from seqgen import checkpoint

    evals = checkpoint.load(result.latest_checkpoint).progress["evals"]
    intervals = [(e["step"] - prev["step"], e["steps_per_s"]) for prev, e in zip(evals, evals[1:])]
    return sum(n for n, _ in intervals), sum(n / rate for n, rate in intervals)
