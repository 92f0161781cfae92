"""Graves' peephole LSTM (time loop, eqs. 7-11) and seqgen's fused fast path vs nn.LSTM of the
same size: forward + backward tokens/s (target >= 0.7x for the peephole cell).

    python benchmarks/bench_lstm.py [--hidden 256] [--batch 32] [--seq 100]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from common import save
from seqgen.models.layers import LSTMLayer


def tokens_per_s(run, tokens: int, repeats: int = 5) -> float:
    run()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return repeats * tokens / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--input", type=int, default=65)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=100)
    a = p.parse_args()
    x = torch.randn(a.batch, a.seq, a.input)
    tokens = a.batch * a.seq

    def layer_step(layer):
        def run():
            state = layer.initial_state(a.batch)
            y, _ = layer(x, state)
            y.sum().backward()
        return run

    reference = nn.LSTM(a.input, a.hidden, batch_first=True)

    def run_reference():
        y, _ = reference(x)
        y.sum().backward()

    # Interleave the measurements so a noisy neighbour affects all of them alike.
    rates = {"nn.LSTM": [], "fast path": [], "peephole loop": [], "peephole + deriv clip": []}
    cases = {"nn.LSTM": run_reference, "fast path": layer_step(LSTMLayer(a.input, a.hidden)),
             "peephole loop": layer_step(LSTMLayer(a.input, a.hidden, peephole=True)),
             "peephole + deriv clip": layer_step(LSTMLayer(a.input, a.hidden, peephole=True, deriv_clip=1.0))}
    for _ in range(3):
        for name, run in cases.items():
            rates[name].append(tokens_per_s(run, tokens))
    best = {k: max(v) for k, v in rates.items()}
    save("lstm", {"shape": f"batch {a.batch} x seq {a.seq}, {a.input} -> {a.hidden}, forward + backward",
                  "tokens_per_s": {k: round(v) for k, v in best.items()},
                  "ratio_vs_nn_lstm": {k: round(v / best["nn.LSTM"], 3) for k, v in best.items()}})


if __name__ == "__main__":
    main()
