"""Handwriting synthesis speed (Graves sec. 5):

1. training timesteps/s of the full seqgen Ray Train pipeline vs a bare PyTorch loop of the same
   network on the very same batches (target >= 0.9x), steady state: the pipeline's own step timer
   (evaluation and checkpoint I/O excluded), the first evaluation interval left out as warm-up;
2. lines/s when synthesising 1 line at a time vs 32 lines in one batch (the bundled model, or
   ``--checkpoint``).

Needs the IAM-OnDB data ($SEQGEN_DATA_DIR or ../shared/data).

    python benchmarks/bench_synthesis.py [--steps 30] [--hidden 128] [--layers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from common import pipeline_steady_state, save
from seqgen import config
from seqgen.handwriting.dataset import preprocess_handwriting
from seqgen.handwriting.sampling import synthesize
from seqgen.handwriting.task import HandwritingTask
from seqgen.catalog import find_checkpoint, load_model
from seqgen.storage import Storage
from seqgen.train.optim import GravesRMSProp
from seqgen.train.run import train

PACKAGE = Path(__file__).resolve().parents[1] / "seqgen"
BUNDLED, CONFIG = PACKAGE / "assets" / "handwriting", PACKAGE / "configs" / "iam-synthesis.yaml"
WARMUP = 5  # = train.eval_every: the pipeline's first evaluation interval


def bare_loop(cfg, storage: Storage, steps: int) -> tuple[float, int]:
    """Seconds and padded timesteps of steps WARMUP+1..steps of the plainest loop: the task only
    hands out the same batches the pipeline trains on (same seed, same cursor)."""
    torch.manual_seed(0)
    task = HandwritingTask(cfg, storage)
    model = task.build_model()
    opt = GravesRMSProp(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    seconds, timesteps = 0.0, 0
    for step in range(1, steps + 1):
        batch = task.next_batch()
        start = time.perf_counter()
        loss, _ = task.line_stats(model(batch.x, model.initial_state(batch.x.shape[0]), batch.chars,
                                        batch.char_mask)[0], batch, clip=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step > WARMUP:
            seconds += time.perf_counter() - start
            timesteps += batch.x.shape[0] * batch.x.shape[1]
    return seconds, timesteps


def lines_per_s(model, meta: dict, texts: list[str], at_once: int) -> tuple[float, float]:
    """(lines/s, points/s) writing ``texts`` ``at_once`` lines per batch (the stop rule ends each line)."""
    start, points = time.perf_counter(), 0
    for i in range(0, len(texts), at_once):
        points += sum(len(r.offsets) for r in synthesize(model, meta, texts[i : i + at_once], bias=0.75, seed=i))
    seconds = time.perf_counter() - start
    return len(texts) / seconds, points / seconds


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--checkpoint", default=str(BUNDLED), help="synthesis checkpoint to sample from (default: bundled)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as root:
        st = Storage.from_url(root)
        preprocess_handwriting(st, "iam")
        cfg = config.load(CONFIG, [
            f"model.hidden_size={a.hidden}", f"model.num_layers={a.layers}", f"train.batch_size={a.batch}",
            f"train.max_steps={a.steps}", f"train.eval_every={WARMUP}", "train.eval_tokens=4", "train.max_minutes=0",
            "train.progress=false", "run_name=bench"])
        bare_before, timesteps = bare_loop(cfg, st, a.steps)
        pipeline = pipeline_steady_state(train(cfg, st))[1]  # steps WARMUP+1..max_steps
        bare = (bare_before + bare_loop(cfg, st, a.steps)[0]) / 2  # bracket the pipeline: load drifts
    texts = [f"line {i} of the benchmark" for i in range(32)]
    model, loaded = load_model(find_checkpoint(Storage.from_url("/"), a.checkpoint))
    one_lps, one_pps = lines_per_s(model, loaded.meta, texts[:8], 1)
    many_lps, many_pps = lines_per_s(model, loaded.meta, texts, 32)
    save("synthesis", {
        "model": f"{a.layers} x {a.hidden} LSTM synthesis net, batch {a.batch} lines, Graves RMSProp",
        "steps_timed": a.steps - WARMUP, "timesteps": timesteps,
        "pipeline_timesteps_per_s": round(timesteps / pipeline), "bare_timesteps_per_s": round(timesteps / bare),
        "train_ratio": round(bare / pipeline, 3),
        "sampling": {"checkpoint": a.checkpoint,"1_at_a_time": {"lines_per_s": round(one_lps, 3), "points_per_s": round(one_pps)},
                     "32_at_once": {"lines_per_s": round(many_lps, 3), "points_per_s": round(many_pps)},
                     "ratio_lines_per_s": round(many_lps / one_lps, 2)},
    })


if __name__ == "__main__":
    main()
