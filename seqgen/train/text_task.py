"""The text task for the generic training loop: truncated BPTT over B parallel streams.

A task owns the data side of training (its shard of the corpus, the data cursor, the RNN state
carried between windows) and the loss; the loop in ``seqgen.train.loop`` owns everything else.
Its cursor and carried state go into every checkpoint, so a resumed run continues exactly.

The worker's share of the corpus is never loaded whole: each of its B streams reads its own
region of the shards window by window (``seqgen.data.streams``), so memory does not grow with the
corpus. The streams are a pure function of (dataset, rank, world, B), so the cursor (epoch,
window) is all a resumed run needs to read the very same windows.
"""

from __future__ import annotations

import numpy as np
import torch

from seqgen.config import ExperimentConfig
from seqgen.data.streams import Streams, open_split
from seqgen.data.text import chars_per_token, load_manifest
from seqgen.evaluate import all_reduce_stats, evaluate_tokens, window_stats
from seqgen.models.stack import detach_state
from seqgen.models.text import TextModel
from seqgen.storage import Storage


class TextTask:
    def __init__(self, cfg: ExperimentConfig, storage: Storage, rank: int = 0, world: int = 1, device=None):
        self.cfg, self.device = cfg, device or torch.device("cpu")
        self.manifest = load_manifest(storage, cfg.dataset)
        if self.manifest.get("kind", "text") != "text":
            raise ValueError(f"dataset {cfg.dataset!r} is not a text dataset")
        self.meta = {"kind": "text", "dataset": cfg.dataset, "vocab": self.manifest["vocab"],
                     "chars_per_token": chars_per_token(self.manifest)}
        t = cfg.train
        if t.batch_size % world:
            raise ValueError(f"train.batch_size={t.batch_size} must be divisible by {world} workers")
        self.streams = Streams(open_split(storage, self.manifest, "train", rank, world), t.batch_size // world)
        self.num_windows = (self.streams.length - 1) // t.seq_len
        if self.num_windows < 1:
            raise ValueError(f"training split too small for batch_size={t.batch_size}, seq_len={t.seq_len}")
        self.valid = open_split(storage, self.manifest, "valid", rank, world) if "valid" in self.manifest["splits"] else None
        if self.valid is not None and t.eval_tokens:
            self.valid = self.valid[: t.eval_tokens // world]
        # The training set's size in the loss's unit, for adaptive weight noise's KL / |S|: the loss
        # is a mean per predicted token, so |S| is every worker's tokens together, whatever the
        # window length, batch size or worker count (Graves 2013 sec. 3.2; regularizers.py).
        self.num_train_examples = int(self.manifest["splits"]["train"]["tokens"])
        self.epoch, self.window = 0, 0  # the data cursor
        self.state = None  # carried RNN state, (B, H) tensors
        self._order = None

    def build_model(self) -> TextModel:
        return TextModel(self.cfg.model, self.manifest["vocab_size"])

    # data -----------------------------------------------------------------------------
    def _window_order(self) -> np.ndarray:
        if self._order is None or self._order[0] != self.epoch:
            n = self.num_windows
            order = np.random.default_rng([self.cfg.train.seed, self.epoch]).permutation(n) if self.cfg.train.shuffle else np.arange(n)
            self._order = (self.epoch, order)
        return self._order[1]

    def next_batch(self):
        """(x, y, reset): the next window of every stream, targets shifted by one token."""
        t = self.cfg.train
        w = int(self._window_order()[self.window])
        reset = self.state is None or self.window == 0 or t.shuffle or (t.reset_every and self.window % t.reset_every == 0)
        window = self.streams.window(w * t.seq_len, (w + 1) * t.seq_len + 1).to(self.device)  # (B, T + 1)
        x, y = window[:, :-1], window[:, 1:]
        self.window += 1
        if self.window == self.num_windows:
            self.epoch, self.window = self.epoch + 1, 0
        return x, y, reset

    def loss(self, forward, model, batch):
        """Mean nats per token of one window; ``forward`` runs the (noisy / DDP) model."""
        x, y, reset = batch
        if reset:
            self.state = model.initial_state(x.shape[0], self.device)
        logits, state = forward(x, self.state)
        self.state = detach_state(state)  # truncated BPTT: gradients stop at the window edge
        return window_stats(logits, y)

    def evaluate(self, model) -> dict:
        if self.valid is None:
            return {}
        stats = evaluate_tokens(model, self.valid, streams=16, seq_len=self.cfg.train.seq_len)
        stats = all_reduce_stats(stats, self.device)
        return stats.metrics("valid", self.meta["chars_per_token"])

    # checkpointing ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "window": self.window, "state": self.state}

    def load_state_dict(self, d: dict) -> None:
        self.epoch, self.window, self.state = d["epoch"], d["window"], d["state"]

