"""Data-parallel training without Ray: `seqgen.train.loop.train_loop` in ``world`` processes of this
machine joined by torch.distributed (gloo over loopback), as Ray Train's workers run it. For tests
of what DDP itself must guarantee (identical replicas, each worker's own state in a checkpoint,
bit-exact continuation): a Ray Train run costs ~30 CPU-s of actors and start-up for the same
loop, and the tests of Ray Train's part (a worker group's failures, a node's loss) run it anyway."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch.multiprocessing as mp

from seqgen.config import ExperimentConfig, load_json, to_dict
from seqgen.storage import Storage
from tests.processes import free_port


def train_ddp(cfg: ExperimentConfig, storage: Storage, world: int, reports: Path) -> list[list[dict]]:
    """Train run ``cfg.run_name`` on ``storage`` as ``world`` DDP workers (each a fresh interpreter
    with this process's environment); every worker's reported metrics, one list per rank."""
    reports.mkdir(parents=True, exist_ok=True)
    mp.start_processes(_worker, args=(world, free_port(), to_dict(cfg), storage.url, str(reports)), nprocs=world,
                       join=True, start_method="spawn")
    return [[json.loads(line) for line in (reports / f"rank{rank}.jsonl").read_text().splitlines()]
            for rank in range(world)]


def _worker(rank: int, world: int, port: int, experiment: dict, storage_url: str, reports: str) -> None:
    import torch
    import torch.distributed as dist

    from seqgen.train.loop import train_loop

    torch.set_num_threads(1)  # as a Ray Train worker of one CPU
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    path = os.path.join(reports, f"rank{rank}.jsonl")

    def report(metrics: dict, checkpoint_url: str | None) -> None:
        with open(path, "a") as f:
            f.write(json.dumps(metrics) + "\n")

    try:
        train_loop(load_json(experiment), Storage(storage_url), report, rank=rank, world=world)
    finally:
        dist.destroy_process_group()
