"""Training throughput: the full seqgen Ray Train pipeline vs a bare PyTorch loop on the same
model and data (target >= 0.9x), steady state (the pipeline's own step timer, evaluation and
checkpoint I/O excluded; the bare loop timed after warm-up, once before and once after the pipeline).

    python benchmarks/bench_train.py [--steps 60] [--hidden 256] [--layers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F

from common import pipeline_steady_state, save
from seqgen import config
from seqgen.data.presets import text_preset
from seqgen.data.text import load_manifest, load_split, preprocess_text
from seqgen.evaluate import batchify
from seqgen.models.stack import detach_state
from seqgen.models.text import TextModel
from seqgen.storage import Storage
from seqgen.train.run import train


def bare_loop(cfg, ids, steps: int, warmup: int = 5) -> float:
    """tokens/s of the plainest loop: same model, data layout, optimiser and clipping."""
    torch.manual_seed(0)
    model = TextModel(cfg.model, 65)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    data = batchify(ids, cfg.train.batch_size)
    T = cfg.train.seq_len
    state = model.initial_state(cfg.train.batch_size)
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        x, y = data[:, i * T : (i + 1) * T], data[:, i * T + 1 : (i + 1) * T + 1]
        logits, state = model(x, state)
        state = detach_state(state)
        loss = F.cross_entropy(logits.reshape(-1, 65), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_norm_clip)
        opt.step()
    return steps * cfg.train.batch_size * T / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--workers", type=int, default=0, help="Ray Train workers (0 = local mode)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as root:
        st = Storage.from_url(root)
        preprocess_text(st, "shakespeare", text_preset("shakespeare"))
        cfg = config.load(None, [f"model.hidden_size={a.hidden}", f"model.num_layers={a.layers}", "model.skip=false",
                                 "train.batch_size=32", "train.seq_len=100", "train.eval_tokens=2000",
                                 f"train.max_steps={a.steps + 5}", "train.eval_every=5", "train.progress=false",
                                 f"train.num_workers={a.workers}", "run_name=bench"])
        ids = load_split(st, load_manifest(st, "shakespeare"), "train")
        before = bare_loop(cfg, ids, a.steps)
        result = train(cfg, st)
        bare = (before + bare_loop(cfg, ids, a.steps)) / 2  # bracket the pipeline: load drifts on a shared box
        steps, seconds = pipeline_steady_state(result)
        pipeline = steps * 32 * 100 / seconds
    save("train", {"model": f"{a.layers} x {a.hidden} LSTM, batch 32 x 100, Adam + clip 5",
                   "workers": a.workers, "pipeline_tokens_per_s": round(pipeline),
                   "bare_tokens_per_s": round(bare), "ratio": round(pipeline / bare, 3)})


if __name__ == "__main__":
    main()
