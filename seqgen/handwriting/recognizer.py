"""Online handwriting recognition: the meter of legibility (Graves et al. 2009, "A Novel
Connectionist System for Unconstrained Handwriting Recognition", at CPU scale).

A bidirectional LSTM reads the same normalised pen offsets the prediction and synthesis networks
read (same dataset, same shards, same statistics) and a CTC output layer (Graves et al. 2006)
spells the line::

    steps    x_2..x_T (B, T, 3) normalised (dx, dy, eos): a line's real pen steps (row 0 of a stored
             line is only its origin, `iam.strokes_to_offsets`)
    frames   k = model.frame_stack consecutive steps side by side (B, ceil(T / k), 3k): CTC needs
             only a frame or two per character (~25 points a character in IAM-OnDB), and a k times
             shorter sequence is k times less LSTM work
    h_t      [forward LSTM ; backward LSTM] over the frames, model.num_layers deep
    y_t      log_softmax(W h_t + b) over the alphabet's classes; class 0 (the END dummy, never a
             real character) is CTC's blank

Loss: CTC, nats per line (the negative log-probability of the transcription, summed over the
alignments). Decoding: best path (argmax per frame, merge repeats, drop blanks). Error rates:
edit distance (rapidfuzz) over characters (CER) and over words (WER), summed over lines and divided
by the reference's length, as handwriting recognition reports them.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from rapidfuzz.distance import Levenshtein
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from seqgen.config import ExperimentConfig, ModelConfig
from seqgen.evaluate import all_reduce_stats
from seqgen.handwriting.iam import Alphabet
from seqgen.handwriting.models import meta_alphabet
from seqgen.handwriting.sampling import normalise
from seqgen.handwriting.task import Batch, HandwritingTask

BLANK = 0  # CTC's blank: the alphabet's END class


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """(B, T, F) with row b real for its first lengths[b] steps -> each row's real steps in reverse
    order, padding left where it is (at the end). Its own inverse."""
    t = torch.arange(x.shape[1], device=x.device)
    real = t < lengths[:, None].to(x.device)
    index = torch.where(real, lengths[:, None].to(x.device) - 1 - t, t)  # (B, T)
    return x.gather(1, index[..., None].expand_as(x))


class HandwritingRecognizer(nn.Module):
    """Pen steps -> per-frame log-probabilities over the alphabet (class 0 = blank).

    Each layer is a forward and a backward LSTM over the zero-padded frames; the backward one reads
    every row reversed within its own length, so it starts at the line's last frame, never in
    padding, and a line reads the same alone or in any batch. (Packed sequences do the same, but
    torch's CPU backward through a packed LSTM of mixed lengths measured 10-20x slower here.)
    """

    def __init__(self, cfg: ModelConfig, alphabet_size: int):
        super().__init__()
        if cfg.frame_stack < 1:
            raise ValueError(f"model.frame_stack must be >= 1, got {cfg.frame_stack}")
        self.k, H = cfg.frame_stack, cfg.hidden_size
        sizes = [3 * self.k] + [2 * H] * (cfg.num_layers - 1)
        self.forward_layers = nn.ModuleList(nn.LSTM(n, H, batch_first=True) for n in sizes)
        self.backward_layers = nn.ModuleList(nn.LSTM(n, H, batch_first=True) for n in sizes)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(2 * H, alphabet_size)

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        return (lengths + self.k - 1) // self.k

    def forward(self, steps: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """steps (B, T, 3) zero-padded, lengths (B,) -> (log_probs (B, T', C), frame lengths (B,))."""
        B, T, _ = steps.shape
        pad = (-T) % self.k
        h = F.pad(steps, (0, 0, 0, pad)).reshape(B, (T + pad) // self.k, 3 * self.k)  # (B, T', 3k)
        n = self.frame_lengths(lengths)
        for i, (fwd, bwd) in enumerate(zip(self.forward_layers, self.backward_layers)):
            if i:
                h = self.dropout(h)
            back = reverse_padded(bwd(reverse_padded(h, n))[0], n)
            h = torch.cat([fwd(h)[0], back], -1)  # (B, T', 2H)
        return F.log_softmax(self.head(h), -1), n


def build_recognizer(cfg: ExperimentConfig, meta: dict) -> HandwritingRecognizer:
    alphabet = meta_alphabet(meta)
    if alphabet is None:
        raise ValueError("handwriting_recognition needs meta['alphabet'] (Alphabet.to_json())")
    return HandwritingRecognizer(cfg.model, len(alphabet))


# ----------------------------------------------------------------------------- decoding, scoring


def best_path(log_probs: Tensor, lengths: Tensor, alphabet: Alphabet) -> list[str]:
    """Greedy CTC decoding of (B, T', C): per frame the likeliest class, repeats merged, blanks dropped."""
    best = log_probs.argmax(-1).cpu().numpy()
    out = []
    for row, n in zip(best, lengths.tolist()):
        path = row[:n]
        keep = (path != BLANK) & np.concatenate([[True], path[1:] != path[:-1]])
        out.append("".join(alphabet.chars[i] for i in path[keep]))
    return out


@dataclass
class ReadingStats:
    """Sums over read lines; merge with +. ``nll``: CTC nats (0 when only decoded)."""

    lines: int = 0
    char_errors: int = 0  # edit distance between reading and reference, in characters
    chars: int = 0  # reference characters
    word_errors: int = 0  # edit distance over whitespace-separated words
    words: int = 0
    nll: float = 0.0

    def __add__(self, other: ReadingStats) -> ReadingStats:
        return ReadingStats(*(a + b for a, b in zip(astuple(self), astuple(other))))

    @property
    def cer(self) -> float:
        return self.char_errors / max(self.chars, 1)

    @property
    def wer(self) -> float:
        return self.word_errors / max(self.words, 1)

    def metrics(self, prefix: str) -> dict:
        return {f"{prefix}_loss": self.nll / max(self.lines, 1), f"{prefix}_cer": self.cer,
                f"{prefix}_wer": self.wer, f"{prefix}_lines": self.lines}


def reading_stats(readings: list[str], references: list[str]) -> ReadingStats:
    """Character and word edit distances of ``readings`` against ``references``."""
    stats = ReadingStats(lines=len(readings))
    for hyp, ref in zip(readings, references):
        stats.char_errors += Levenshtein.distance(hyp, ref)
        stats.chars += len(ref)
        stats.word_errors += Levenshtein.distance(hyp.split(), ref.split())
        stats.words += len(ref.split())
    return stats


# ----------------------------------------------------------------------------- reading lines


def line_steps(lines: list[dict]) -> list[np.ndarray]:
    """Stored dataset lines -> their real pen steps (rows 1..T-1; row 0 is the origin)."""
    return [line["offsets"][1:] for line in lines]


@torch.no_grad()
def read_steps(model: HandwritingRecognizer, meta: dict, steps: list[np.ndarray], batch_size: int = 32) -> list[str]:
    """Read pen steps (each (T, 3) dx, dy, eos in data units, e.g. `line_steps` or a synthesised
    line's offsets) with the recognizer's own normalisation (its checkpoint's statistics, whatever
    dataset the lines come from); the readings in the given order."""
    alphabet = meta_alphabet(meta)
    like = model.head.weight
    was_training = model.training
    model.eval()
    out: dict[int, str] = {}
    try:
        order = np.argsort([len(s) for s in steps], kind="stable")  # similar lengths per batch
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            x = pad_sequence([normalise(steps[j], meta, like) for j in idx], batch_first=True)
            lengths = torch.tensor([max(len(steps[j]), 1) for j in idx])
            log_probs, n = model(x, lengths)
            out.update(zip(idx.tolist(), best_path(log_probs, n, alphabet)))
    finally:
        model.train(was_training)
    return [out[i] for i in range(len(steps))]


# ----------------------------------------------------------------------------- training


def augment(steps: Tensor, mask: Tensor, mean: Tensor, std: Tensor, strength: float, generator) -> Tensor:
    """Normalised steps (B, T, 3) of B lines, each redrawn at a random size and slant: in data units
    dx' = sx dx + k sy dy, dy' = sy dy (a scale, then a shear: both linear, so absolute positions
    and offsets transform alike), with sx, sy ~ 1 + U(-a, a) and k ~ U(-a, a) for a = ``strength``.
    Padding stays 0."""
    B = steps.shape[0]
    u = lambda: (torch.rand(B, 1, generator=generator) * 2 - 1) * strength  # noqa: E731
    sx, sy, k = 1 + u(), 1 + u(), u()
    dx, dy = (steps[..., 0] * std[0] + mean[0]), (steps[..., 1] * std[1] + mean[1])  # data units
    dx, dy = sx * dx + k * sy * dy, sy * dy
    out = torch.stack([(dx - mean[0]) / std[0], (dy - mean[1]) / std[1], steps[..., 2]], -1)
    return out * mask[..., None]


class RecognitionTask(HandwritingTask):
    """`HandwritingTask`'s lines and batching (whole lines, length-bucketed, exact resume), with the
    CTC loss and validation CER / WER. A batch's ``target`` rows are the lines' real steps x_2..x_T
    and ``mask`` marks them, so the recognizer reads exactly what the generators predict.
    ``train.augment`` > 0 redraws every training line at a random size and slant (`augment`), with
    random numbers seeded by (seed, epoch, batch), so a resumed run sees the same lines."""

    score_metric = "valid_cer"  # keep-best and early stopping: the checkpoints that read best

    def build_model(self):
        return build_recognizer(self.cfg, self.meta)

    def next_batch(self) -> Batch:
        epoch, index = self.epoch, self.batch
        batch = super().next_batch()
        if self.cfg.train.augment <= 0:
            return batch
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.cfg.train.seed, epoch, index]).generate_state(1)[0]))
        mean, std = torch.as_tensor(self.mean), torch.as_tensor(self.std)
        steps = augment(batch.target.cpu(), batch.mask.cpu(), mean, std, self.cfg.train.augment, g)
        return batch._replace(target=steps.to(self.device))

    def _read(self, model, batch: Batch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        lengths = batch.mask.sum(1)
        log_probs, n = model(batch.target, lengths)  # (B, T', C)
        nll = F.ctc_loss(log_probs.transpose(0, 1), batch.chars, n, batch.char_mask.sum(1), blank=BLANK,
                         reduction="none", zero_infinity=True)  # (B,) nats per line
        return log_probs, n, nll, lengths

    def loss(self, forward, model, batch: Batch):
        log_probs, n, nll, _ = self._read(forward, batch)
        stats = ReadingStats(lines=len(nll), nll=nll.sum().item())
        return nll.mean(), stats

    @torch.no_grad()
    def evaluate(self, model) -> dict:
        """CTC nats per line, CER and WER of best-path readings on this worker's validation lines
        (summed over workers under DDP)."""
        if self.valid is None:
            return {}
        was_training = model.training
        model.eval()
        total = ReadingStats()
        try:
            order = np.argsort([len(x) for x, _ in self.valid], kind="stable")
            for i in range(0, len(order), self.batch_size):
                batch = self.collate([self.valid[j] for j in order[i : i + self.batch_size]])
                log_probs, n, nll, _ = self._read(model, batch)
                refs = [self.alphabet.decode(c) for c in batch.chars.cpu().numpy()]
                stats = reading_stats(best_path(log_probs, n, self.alphabet), refs)
                stats.nll = nll.sum().item()
                total = total + stats
        finally:
            model.train(was_training)
        total = all_reduce_stats(total, self.device)
        return total.metrics("valid") if total.lines else {}
