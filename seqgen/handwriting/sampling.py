"""Writing with the handwriting networks: one free-running loop, probability bias, priming (MODELS.md sec. 6).

`free_run` drives either network through the step protocol: feed x_t, read y_t, draw
x_{t+1} ~ Pr(. | y_t) with probability bias b (eqs. 61-62), feed it back. With a text it also
applies the stop rule of sec. 5: a row ends at the first step where phi(t, U+1) > phi(t, u) for
all u <= U (the window has moved past its text), or at its hard length limit.

* `sample_strokes`: unconditional handwriting from the prediction network (sec. 4).
* `synthesize`: a batch of texts from the synthesis network (sec. 5), each row with its own stop,
  optionally primed: the text becomes c' = prime_text + " " + text, the pen is clamped to the
  priming strokes for their T steps (one teacher-forced call), then the loop runs on from the
  state that leaves (only the free-running part is returned).

Every row has its own ``torch.Generator`` seeded ``seed + row``, so a row's sample depends only on
its seed and text, never on which other rows share its batch. The first input is the paper's
all-zero x_1 ("no prior information", sec. 2). The networks see offsets normalised by
``meta["offset_mean"]`` / ``meta["offset_std"]``; everything here takes and returns data units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from seqgen.handwriting.mdn import MixtureParams, sample_mixture, split_mixture
from seqgen.handwriting.models import HandwritingModel, meta_alphabet
from seqgen.handwriting.window import should_stop

POINTS_PER_CHAR = 25  # sec. 4.2: IAM-OnDB has ~25 points a character; sizes the longest accepted text


@dataclass
class Result:
    """One synthesised line. ``offsets[i]`` was drawn at step i, when the window was ``phi[i]``."""

    text: str
    offsets: np.ndarray  # (T, 3) float32 rows (dx, dy, eos) in data units (iam.offsets_to_strokes draws them)
    phi: np.ndarray  # (T, U) float32 window weights phi(t, u) over the text's characters (Fig. 13)


def _stats(meta: dict, like: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and std (3,) of x_t = (dx, dy, eos); eos is not normalised."""
    mean = torch.tensor([*meta["offset_mean"], 0.0], dtype=like.dtype, device=like.device)
    std = torch.tensor([*meta["offset_std"], 1.0], dtype=like.dtype, device=like.device)
    return mean, std


def normalise(offsets, meta: dict, like: Tensor) -> Tensor:
    """(T, 3) data units -> network inputs (T, 3), with ``like``'s dtype and device."""
    x = torch.as_tensor(np.asarray(offsets), dtype=like.dtype, device=like.device)
    mean, std = _stats(meta, like)
    return (x - mean) / std


def denormalise(x: Tensor, meta: dict) -> np.ndarray:
    """Network samples (T, 3) -> data units, float32 numpy."""
    mean, std = _stats(meta, x)
    return (x * std + mean).float().cpu().numpy()


def _generators(seed: int | None, n: int) -> list[torch.Generator]:
    base = int(torch.randint(2**62, ())) if seed is None else seed
    return [torch.Generator().manual_seed(base + i) for i in range(n)]


def _row(params: MixtureParams, b: int) -> MixtureParams:
    return MixtureParams(*(p[b : b + 1] for p in params))


@torch.no_grad()
def free_run(model: HandwritingModel, state, x: Tensor, limits: Tensor, generators: list[torch.Generator],
             bias: float = 0.0, chars: Tensor | None = None, char_mask: Tensor | None = None):
    """Run ``model`` on its own samples from ``state``, feeding ``x`` first.

    Args:
        x: (B, 3) the next input (normalised); limits: (B,) hard length limit of each row;
        generators: one per row; bias: b of eqs. 61-62 (``inf``: the most likely component's mean);
        chars, char_mask: (B, U) the synthesis network's text; they also turn the stop rule on.
    Returns:
        samples (B, n, 3) normalised, phi (B, n, U + 1) on the CPU or None, and lengths (B,):
        row b's sample is ``samples[b, :lengths[b]]`` (its last point is the one drawn at the step
        where the stop rule first fired, or at its limit).
    """
    device = x.device
    text_len = None if chars is None else (chars != 0 if char_mask is None else char_mask.bool()).sum(1).cpu()
    lengths = limits.clone().cpu()
    samples, phis = [], []
    for t in range(int(lengths.max())):
        yhat, state, phi = model(x[:, None], state, chars, char_mask, return_phi=True)
        params = split_mixture(yhat[:, -1].cpu(), model.M)
        x_next = torch.cat([sample_mixture(_row(params, b), bias, g) for b, g in enumerate(generators)])
        samples.append(x_next)
        if phi is not None:  # sec. 5 stop rule, per row
            phis.append(phi[:, -1].cpu())
            stop = should_stop(phis[-1], text_len)
            lengths = torch.where(stop, lengths.clamp(max=t + 1), lengths)
        if bool((lengths <= t + 1).all()):
            break
        x = x_next.to(device)
    return torch.stack(samples, 1), (torch.stack(phis, 1) if phis else None), lengths


def sample_strokes(model: HandwritingModel, meta: dict, n_points: int = 700, bias: float = 0.0,
                   seed: int | None = None) -> np.ndarray:
    """Unconditional handwriting from the prediction network: (n_points, 3) offsets in data units."""
    if model.synthesis:
        raise ValueError("sample_strokes needs the prediction network; use synthesize() for text")
    model.eval()
    w = model.head.weight
    x = torch.zeros(1, 3, dtype=w.dtype, device=w.device)  # x_1 = 0 (sec. 2)
    samples, _, _ = free_run(model, model.initial_state(1), x, torch.tensor([n_points]), _generators(seed, 1), bias)
    return denormalise(samples[0], meta)


@torch.no_grad()
def read_line(model: HandwritingModel, meta: dict, offsets, text: str | None = None):
    """Teacher-forced outputs over a whole line (data units): yhat (T, 6M+1), where yhat[t] predicts
    offsets[t + 1] (row 0 read as x_1 = 0), and phi (T, U) or None. Feeds `render.mixture_density_png`
    (Fig. 10) and `render.phi_heatmap_png` (Fig. 13) for real lines."""
    model.eval()
    x = normalise(offsets, meta, model.head.weight)
    x[0] = 0
    chars = None
    if text is not None:
        alphabet = meta_alphabet(meta)
        _check_text(alphabet, text)
        chars = torch.as_tensor(alphabet.encode(text), device=x.device)[None]
    yhat, _, phi = model(x[None], model.initial_state(1), chars, return_phi=True)
    return yhat[0], None if phi is None else phi[0, :, :-1]


def _check_text(alphabet, text: str, what: str = "text") -> None:
    if not text:
        raise ValueError(f"empty {what}")
    if alphabet.fallback is None and (bad := alphabet.unknown_chars(text)):  # with a fallback class nothing is unknown
        raise ValueError(f"{what} {text!r} has characters not in the model's alphabet: {bad}")


def synthesize(model: HandwritingModel, meta: dict, texts: list[str], bias: float = 0.0, seed: int | None = None,
               prime: tuple[np.ndarray, str] | None = None, max_points_per_char: int = 40,
               max_points: int = 1500) -> list[Result]:
    """Write ``texts`` in one batch with the synthesis network; row i uses seed ``seed + i``.

    Args:
        prime: (offsets (T, 3) in data units, their text) to imitate a writer, or None. Row 0 of the
            offsets (the origin of the line, iam.strokes_to_offsets) is replaced by the start input
            x_1 = 0. Data must share the training data's y direction (negate dy of the y-up
            sjvasquez styles for an IAM-trained model).
        max_points_per_char, max_points: the hard length limit, min(max_points, U * max_points_per_char).
    Raises ValueError for an empty text, characters outside the alphabet (naming them), or a text
    longer than ``max_points // POINTS_PER_CHAR`` characters (it could not be written in full).
    """
    alphabet = meta_alphabet(meta)
    if alphabet is None or not model.synthesis:
        raise ValueError("synthesize needs the synthesis network and meta['alphabet']")
    if not texts:
        raise ValueError("no texts to write")
    max_chars = max_points // POINTS_PER_CHAR
    for text in texts:
        _check_text(alphabet, text)
        if len(text) > max_chars:
            raise ValueError(f"text {text!r} is too long: {len(text)} characters, at most {max_chars} fit in "
                             f"max_points={max_points} at ~{POINTS_PER_CHAR} points a character")
    model.eval()
    w = model.head.weight
    prefix = ""
    if prime is not None:
        _check_text(alphabet, prime[1], "priming text")
        if len(prime[0]) == 0:
            raise ValueError("empty priming strokes")
        prefix = prime[1] + " "
    encoded = [torch.as_tensor(alphabet.encode(prefix + text)) for text in texts]  # c' = prime + " " + text
    chars = torch.nn.utils.rnn.pad_sequence(encoded, batch_first=True).to(w.device)  # (B, U'), 0 = pad
    B = len(texts)
    state = model.initial_state(B)
    x = torch.zeros(B, 3, dtype=w.dtype, device=w.device)  # x_1 = 0 (sec. 2)
    if prime is not None:
        p = normalise(prime[0], meta, w)
        p[0] = 0  # the start input x_1
        with torch.no_grad():  # teacher-forced: clamp the pen to the priming strokes (one call)
            if len(p) > 1:
                _, state = model(p[None, :-1].expand(B, -1, -1), state, chars)
        x = p[-1].expand(B, 3)  # ... the last one is the first step of the free-running loop
    limits = torch.tensor([min(max_points, max_points_per_char * len(text)) for text in texts])
    samples, phi, lengths = free_run(model, state, x, limits, _generators(seed, B), bias, chars)
    u0 = len(prefix)
    return [
        Result(text, denormalise(samples[b, :n], meta), phi[b, :n, u0 : u0 + len(text)].float().numpy())
        for b, (text, n) in enumerate(zip(texts, lengths.tolist()))
    ]
