"""The handwriting task for the generic training loop: whole lines, full BPTT (Graves secs. 4-5).

Every step is a batch of B whole lines padded to the longest, from a fresh initial state: no state
is carried between batches and gradients flow through the whole line. For one line of T rows:

    stored rows (normalised):  x_1 = (0, 0, 0)       x_2   ...   x_{T-1}   x_T
    inputs   (B, T-1, 3):      x_1                   x_2   ...   x_{T-1}          teacher forcing:
    targets  (B, T-1, 3):      x_2                   x_3   ...   x_T              y_t predicts x_{t+1}
    mask     (B, T-1) bool:    True on real steps (padding adds exactly 0 to the loss, eq. 26)

x_1, the origin row of `strokes_to_offsets`, becomes the all-zero first input of sec. 2 (as in
``seqgen.handwriting.sampling``); it is an input only, never a target. The other rows' (dx, dy)
become (x - offset_mean) / offset_std with the train-split statistics of the manifest; eos is
left as is. Synthesis batches carry the text as class indices chars (B, U), padded with 0 (the
END class, never a real character), and char_mask = chars != 0.

The loss is eq. 26 summed over a line, averaged over the lines of the batch (nats per line, the
paper's log-loss); `LineStats` also reports it per point, and the SSE of the mixture mean.

Epoch order (seeded by (train.seed, epoch), so a resumed run replays it exactly)::

    lines --shuffle--> pools of 50 B lines --sort each pool by length--> batches of B
          --shuffle the batches--> the epoch        (similar lengths per batch: little padding)

``train.join_lines`` > 0 adds pairs of consecutive lines of one form, joined as priming joins a
prime and a text (text A + " " + B, strokes A then B: `joined_lines`), so the synthesis network
learns to continue a writer's hand across a line (sec. 5.5); raise ``train.seq_len`` to cover them.

``train.seq_len`` > 0 is the longest line (in points) trained on: longer lines are left out of
training (truncating would cut the pen off before the end of the text) and counted on stderr;
validation always uses every line. In IAM-OnDB the median line has ~630 points, the longest ~1500.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from seqgen.config import ExperimentConfig
from seqgen.data.text import load_manifest
from seqgen.evaluate import all_reduce_stats
from seqgen.handwriting.dataset import load_lines
from seqgen.handwriting.iam import Alphabet
from seqgen.handwriting.prime import pen_step, writing_size
from seqgen.handwriting.mdn import clip_output_gradient, mixture_nll, split_mixture, sse_per_point
from seqgen.handwriting.sampling import primed
from seqgen.storage import Storage

KINDS = ("handwriting_prediction", "handwriting_synthesis", "handwriting_recognition")
POOL_BATCHES = 50  # length-bucketing pool, in batches


@dataclass
class LineStats:
    """Sums over whole lines; merge with +, turn into metrics with ``metrics``."""

    nll: float = 0.0  # nats, eq. 26 summed over lines
    lines: int = 0
    points: int = 0  # predicted points (targets x_2..x_T of every line)
    sse: float = 0.0  # sum over points of |mixture mean - target (dx, dy)|^2, normalised units

    def __add__(self, other: LineStats) -> LineStats:
        return LineStats(self.nll + other.nll, self.lines + other.lines, self.points + other.points, self.sse + other.sse)

    def metrics(self, prefix: str) -> dict:
        return {
            f"{prefix}_loss": self.nll / max(self.lines, 1),  # nats per line: the paper's log-loss (sec. 4.2)
            f"{prefix}_loss_per_point": self.nll / max(self.points, 1),
            f"{prefix}_sse": self.sse / max(self.points, 1),  # per point, in normalised offset units
            f"{prefix}_lines": self.lines,
        }


class Batch(NamedTuple):
    x: Tensor  # (B, T-1, 3) inputs x_1..x_{T-1}
    target: Tensor  # (B, T-1, 3) targets x_2..x_T
    mask: Tensor  # (B, T-1) bool
    chars: Tensor | None  # (B, U) long, 0-padded (synthesis and recognition only)
    char_mask: Tensor | None  # (B, U) bool


def joined_lines(lines: list[dict], fraction: float, seed: int) -> list[dict]:
    """Training examples that teach the synthesis network to carry a hand across lines (Graves
    sec. 5.5): pairs of consecutive lines of one form (one writer) joined exactly as priming joins a
    prime and a text (`sampling.primed`), round(fraction x lines) of them, a seeded choice."""
    pairs = [(a, b) for a, b in zip(lines, lines[1:]) if a["form_id"] == b["form_id"]]
    if not pairs:
        return []
    rng = np.random.default_rng([seed, 5_5])  # 5.5: the section
    chosen = rng.choice(len(pairs), size=min(len(pairs), round(fraction * len(lines))), replace=False)
    out = []
    for i in sorted(chosen):
        a, b = pairs[i]
        out.append({**primed(a, b)[0], "form_id": a["form_id"], "line_id": f"{a['line_id']}+{b['line_id']}"})
    return out


class HandwritingTask:
    """Data, batching, loss and evaluation of handwriting prediction / synthesis for ``seqgen.train.loop``."""

    def __init__(self, cfg: ExperimentConfig, storage: Storage, rank: int = 0, world: int = 1, device=None):
        self.cfg, self.device = cfg, device or torch.device("cpu")
        if cfg.model.kind not in KINDS:
            raise ValueError(f"model.kind={cfg.model.kind!r} is not a handwriting kind ({', '.join(KINDS)})")
        self.manifest = load_manifest(storage, cfg.dataset)
        if self.manifest.get("kind") != "handwriting":
            raise ValueError(f"dataset {cfg.dataset!r} is not a handwriting dataset (kind {self.manifest.get('kind')!r})")
        self.synthesis = cfg.model.kind == "handwriting_synthesis"
        self.reads_text = cfg.model.kind != "handwriting_prediction"  # synthesis writes it, recognition reads it
        self.meta = {"kind": cfg.model.kind, "dataset": cfg.dataset,
                     "alphabet": self.manifest["alphabet"] if self.reads_text else None,
                     "offset_mean": self.manifest["offset_mean"], "offset_std": self.manifest["offset_std"]}
        self.alphabet = Alphabet.from_json(self.manifest["alphabet"]) if self.reads_text else None
        self.mean = np.asarray(self.manifest["offset_mean"], np.float32)
        self.std = np.asarray(self.manifest["offset_std"], np.float32)
        t = cfg.train
        if t.batch_size % world:
            raise ValueError(f"train.batch_size={t.batch_size} must be divisible by {world} workers")
        self.batch_size = t.batch_size // world
        lines = load_lines(storage, self.manifest, "train", rank, world)
        if t.join_lines > 0:
            lines = lines + joined_lines(lines, t.join_lines, t.seed)
        self.train = [self._prepare(line) for line in lines if not t.seq_len or len(line["offsets"]) <= t.seq_len]
        if dropped := len(lines) - len(self.train):
            print(f"[{cfg.run_name}] worker {rank}: {dropped} of {len(lines)} training lines are longer than "
                  f"train.seq_len={t.seq_len} points and are not trained on", file=sys.stderr, flush=True)
        if not self.train:
            raise ValueError(f"no training lines of at most train.seq_len={t.seq_len} points (0 = no cap)")
        self.lengths = np.array([len(x) for x, _ in self.train])
        if self.synthesis:  # the window's initial pace (HandwritingModel.__init__); DDP keeps rank 0's
            self.meta["points_per_char"] = float(self.lengths.sum() / sum(len(c) for _, c in self.train))
            # the size a user's own strokes are scaled to before they prime the network (handwriting.prime)
            self.meta["ink_per_char"] = writing_size(lines)
            self.meta["pen_step"] = pen_step(lines)  # and the density they are resampled to
        self.num_train_examples = len(self.train) * world  # the training set's size in lines (per-line loss)
        self.valid = None
        if "valid" in self.manifest["splits"]:
            cap = max(t.eval_tokens // world, 1) if t.eval_tokens > 0 else None  # eval_tokens: validation lines
            self.valid = [self._prepare(line) for line in load_lines(storage, self.manifest, "valid", rank, world)[:cap]]
        self.epoch, self.batch = 0, 0  # the data cursor
        self._order: tuple[int, list[np.ndarray]] | None = None

    def build_model(self):
        from seqgen.handwriting.models import build_handwriting_model

        return build_handwriting_model(self.cfg, self.meta)

    # data -----------------------------------------------------------------------------
    def _prepare(self, line: dict) -> tuple[Tensor, Tensor | None]:
        """A stored line -> (normalised rows (T, 3) float32, text as class indices (U,) | None)."""
        x = line["offsets"].copy()
        x[1:, :2] = (x[1:, :2] - self.mean) / self.std
        x[0] = 0  # x_1 = 0: "no prior information" (sec. 2)
        chars = torch.from_numpy(self.alphabet.encode(line["text"])) if self.reads_text else None
        return torch.from_numpy(x), chars

    def collate(self, lines: list[tuple[Tensor, Tensor | None]]) -> Batch:
        """Pad B lines into a `Batch` (see the module docstring) on the task's device."""
        rows = pad_sequence([x for x, _ in lines], batch_first=True)  # (B, T, 3)
        lengths = torch.tensor([len(x) for x, _ in lines])
        mask = torch.arange(rows.shape[1] - 1) < (lengths - 1).unsqueeze(1)  # (B, T-1)
        chars = pad_sequence([c for _, c in lines], batch_first=True) if self.reads_text else None  # (B, U)
        to = lambda t: None if t is None else t.to(self.device)  # noqa: E731
        return Batch(to(rows[:, :-1]), to(rows[:, 1:]), to(mask), to(chars), to(None if chars is None else chars != 0))

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """Line indices of every batch of ``epoch``, length-bucketed (module docstring)."""
        if self._order is None or self._order[0] != epoch:
            rng, B = np.random.default_rng([self.cfg.train.seed, epoch]), self.batch_size
            order, batches = rng.permutation(len(self.train)), []
            for start in range(0, len(order), POOL_BATCHES * B):
                pool = order[start : start + POOL_BATCHES * B]
                pool = pool[np.argsort(self.lengths[pool], kind="stable")]
                batches += [pool[i : i + B] for i in range(0, len(pool), B)]
            self._order = (epoch, [batches[i] for i in rng.permutation(len(batches))])
        return self._order[1]

    def next_batch(self) -> Batch:
        batches = self.epoch_batches(self.epoch)
        batch = self.collate([self.train[i] for i in batches[self.batch]])
        self.batch += 1
        if self.batch == len(batches):
            self.epoch, self.batch = self.epoch + 1, 0
        return batch

    # loss -------------------------------------------------------------------------------
    def line_stats(self, yhat: Tensor, batch: Batch, clip: bool = False) -> tuple[Tensor, LineStats]:
        """yhat (B, T-1, 6M+1) -> (mean over lines of L(x), eq. 26; the batch's `LineStats`).

        ``clip``: clip dL/dyhat to [-c, c] per line (sec. 4, c = model.output_clip); the loss is a
        mean over B lines, so its derivative is clipped at c / B.
        """
        B, c = yhat.shape[0], self.cfg.model.output_clip
        if clip and c > 0:
            yhat = clip_output_gradient(yhat, c / B)
        params = split_mixture(yhat, self.cfg.model.mixture_components)  # eqs. 18-22
        nll = mixture_nll(params, batch.target, batch.mask).sum(1)  # (B,) eq. 26 per line
        with torch.no_grad():
            sse = sse_per_point(params, batch.target, batch.mask)  # (B, T-1)
        stats = LineStats(nll.sum().item(), B, int(batch.mask.sum().item()), sse.sum().item())
        return nll.mean(), stats

    def loss(self, forward, model, batch: Batch) -> tuple[Tensor, LineStats]:
        """The per-line loss of one batch, full BPTT from a fresh state; ``forward`` runs the (noisy / DDP) model."""
        state = model.initial_state(batch.x.shape[0], self.device)
        yhat, _ = forward(batch.x, state, batch.chars, batch.char_mask)  # (B, T-1, 6M+1)
        return self.line_stats(yhat, batch, clip=True)

    @torch.no_grad()
    def evaluate(self, model) -> dict:
        """Metrics on this worker's share of the valid split (summed over workers under DDP), in
        batches of similar length; ``train.eval_tokens`` > 0 caps the lines evaluated."""
        if self.valid is None:
            return {}
        was_training = model.training
        model.eval()
        total = LineStats()
        try:
            order = np.argsort([len(x) for x, _ in self.valid], kind="stable")
            for i in range(0, len(order), self.batch_size):
                batch = self.collate([self.valid[j] for j in order[i : i + self.batch_size]])
                yhat, _ = model(batch.x, model.initial_state(batch.x.shape[0], self.device), batch.chars, batch.char_mask)
                total = total + self.line_stats(yhat, batch)[1]
        finally:
            model.train(was_training)
        total = all_reduce_stats(total, self.device)
        return total.metrics("valid") if total.lines else {}

    # checkpointing ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, d: dict) -> None:
        self.epoch, self.batch = d["epoch"], d["batch"]

