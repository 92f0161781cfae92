"""Evaluating trained models, statically or with dynamic evaluation (sec. 3.1: a gradient step on
each window or batch of lines *after* predicting it, so nothing is trained on before it is scored).

* text (sec. 3): bits per token / character, perplexity, next-step error (`evaluate_tokens`);
* handwriting (secs. 4-5): in `seqgen.handwriting.evaluate`, which builds on the statistics
  helpers here.

``evaluate_tokens`` takes an optional `seqgen.progress.Progress` that it advances by tokens.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from seqgen.data.streams import Streams
from seqgen.models.stack import detach_state

LN2 = math.log(2)


def batchify(ids: np.ndarray, streams: int) -> torch.Tensor:
    """Lay a token sequence out as ``streams`` contiguous rows (pytorch word_language_model)::

        ids:     a b c d e f g h i j k l m n o p q r      (N tokens, B = 3 streams)
        rows:    a b c d e f
                 g h i j k l           each row is read left to right in windows of T tokens;
                 m n o p q r           the RNN state of row b carries over from window to window
    The last N mod B tokens are dropped.
    """
    length = len(ids) // streams
    if length < 2:
        raise ValueError(f"{len(ids)} tokens are too few for {streams} streams")
    return torch.from_numpy(np.asarray(ids[: length * streams], dtype=np.int64)).view(streams, length)


@dataclass
class TokenStats:
    """Sums over predicted tokens; merge with +, turn into metrics with ``metrics``."""

    nll: float = 0.0  # nats
    count: int = 0
    correct: int = 0

    def __add__(self, other: "TokenStats") -> "TokenStats":
        return TokenStats(self.nll + other.nll, self.count + other.count, self.correct + other.correct)

    def metrics(self, prefix: str, chars_per_token: float = 1.0) -> dict:
        bits = self.nll / LN2 / max(self.count, 1)
        return {
            f"{prefix}_loss": bits,  # bits per token: the number every model reports
            f"{prefix}_bpc": bits / chars_per_token,
            f"{prefix}_ppl": math.exp(min(self.nll / max(self.count, 1), 700)),
            f"{prefix}_error": 1 - self.correct / max(self.count, 1),
            f"{prefix}_tokens": self.count,
        }


def all_reduce_stats(stats, device=None):
    """Sum a statistics dataclass (TokenStats, LineStats) over DDP workers, each of which
    evaluated its own share; unchanged without a process group."""
    import dataclasses

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return stats
    values = dataclasses.astuple(stats)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return type(stats)(*(type(v)(x) for v, x in zip(values, t.tolist())))


def window_stats(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, TokenStats]:
    """Mean loss (nats, for backprop) and the summed statistics of one window."""
    flat = logits.reshape(-1, logits.shape[-1])
    nll = F.cross_entropy(flat, targets.reshape(-1), reduction="sum")
    correct = (flat.argmax(-1) == targets.reshape(-1)).sum().item()
    return nll / targets.numel(), TokenStats(nll.item(), targets.numel(), correct)


def evaluate_tokens(model, ids: np.ndarray, streams: int = 16, seq_len: int = 100,
                    dynamic_lr: float = 0.0, progress=None) -> TokenStats:
    """Predict ``ids`` with ``streams`` parallel rows, carrying state across windows. ``ids`` is an
    array or a lazily read ``seqgen.data.streams.SplitTokens``: only the current window is loaded.

    ``dynamic_lr > 0`` is dynamic evaluation (sec. 3.1): after predicting each window, take one
    SGD step on it, on a copy of the model, so every token is predicted before it is trained on.
    """
    streams = max(1, min(streams, len(ids) // (seq_len + 1) or 1))
    rows = Streams(ids, streams)  # batchify, a window at a time
    device = next(model.parameters()).device
    if dynamic_lr > 0:
        model = copy.deepcopy(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=dynamic_lr)
    was_training = model.training
    model.eval()
    total = TokenStats()
    state = model.initial_state(streams, device)
    try:
        for start in range(0, rows.length - 1, seq_len):
            window = rows.window(start, start + seq_len + 1).to(device)  # (B, <= T + 1)
            x, y = window[:, :-1], window[:, 1:]
            with torch.set_grad_enabled(dynamic_lr > 0):
                logits, new_state = model(x, state)
                loss, stats = window_stats(logits, y)
            if dynamic_lr > 0:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            state = detach_state(new_state)
            total = total + stats
            if progress is not None:
                progress.advance(stats.count)
    finally:
        model.train(was_training)
    return total
