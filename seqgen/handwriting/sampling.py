"""Writing with the handwriting networks on the step protocol (`seqgen.sampling`): probability
bias, the stop rule and priming (docs/equations.md sec. 9).

`HandwritingGenerator` is what the one free-running loop (`seqgen.sampling.Decoder`) needs: feed
x_t, read y_t, draw x_{t+1} ~ Pr(. | y_t) with probability bias b (eqs. 61-62), feed it back; with
a text it also applies the stop rule of sec. 5.

* `sample_strokes`: unconditional handwriting from the prediction network (sec. 4).
* `synthesize`: a batch of texts from the synthesis network (sec. 5), each row with its own stop,
  optionally primed (only the free-running part is returned).

Row i of a call uses seed ``seed + i`` and counter-based random numbers (`seqgen.rng`), so a row's
sample depends only on its seed and text, never on which other rows share its batch. The first
input is the paper's all-zero x_1 ("no prior information", sec. 2). The networks see offsets
normalised by ``meta["offset_mean"]`` / ``meta["offset_std"]``; everything here takes and returns
data units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from seqgen import rng
from seqgen.handwriting import DEFAULT_BIAS
from seqgen.handwriting.mdn import draw_mixture, split_mixture
from seqgen.handwriting.models import HandwritingModel, meta_alphabet
from seqgen.handwriting.window import should_stop
from seqgen.sampling import Job, Row, run

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


class HandwritingGenerator:
    """The `seqgen.sampling.Generator` of the handwriting networks: mixture-density draws with
    per-row probability bias (eqs. 61-62) and, for the synthesis network, the sec. 5 stop rule: a
    row ends at the first step where phi(t, U+1) > phi(t, u) for all u <= U (the window has moved
    past its text). Inputs and draws are normalised offsets; `denormalise` turns them into data units.
    """

    def __init__(self, model: HandwritingModel, meta: dict):
        self.model = model.eval()
        self.meta = meta
        self.alphabet = meta_alphabet(meta)
        self.lanes = model.M + 3  # Gumbel-max over M components, two normals, one Bernoulli
        self.weight = model.head.weight  # dtype and device of the network

    # -- the step protocol
    def initial_state(self, batch: int):
        return self.model.initial_state(batch)

    def context(self, rows: list[Row]):
        """(chars (B, U) padded with 0, lengths (B,)) of the synthesis rows' texts c', or None."""
        if not self.model.synthesis:
            return None
        chars = torch.nn.utils.rnn.pad_sequence([r.context for r in rows], batch_first=True).to(self.weight.device)
        return chars, torch.tensor([len(r.context) for r in rows])

    def options(self, rows: list[Row]) -> Tensor:
        return torch.tensor([r.options for r in rows], dtype=self.weight.dtype, device=self.weight.device)

    def prefill(self, inputs: Tensor, state, context):
        return self.model(inputs, state, None if context is None else context[0])

    def step(self, x: Tensor, state, context):
        chars = None if context is None else context[0]
        yhat, state, phi = self.model(x[:, None], state, chars, return_phi=True)
        return yhat[:, -1], (None if phi is None else phi[:, -1]), state

    def draw(self, yhat: Tensor, phi, bias: Tensor, context, u: Tensor):
        ok = torch.isfinite(yhat).all(-1)
        yhat = torch.where(ok[:, None], yhat, torch.zeros_like(yhat))
        x = draw_mixture(split_mixture(yhat, self.model.M), bias, u)
        stop = torch.zeros_like(ok) if phi is None else should_stop(phi, context[1]).to(ok.device)
        return x, stop, ok

    def emit(self, x: Tensor) -> list:
        return list(x.cpu().unbind(0))

    # -- jobs
    def job(self, text: str | None = None, bias: float = DEFAULT_BIAS, seed: int | None = None,
            prime: tuple[np.ndarray, str] | None = None, limit: int | None = None, n: int = 1,
            keep_phi: bool = False, max_points_per_char: int = 40, max_points: int = 1500) -> Job:
        """n lines of ``text`` (synthesis) or of free handwriting (prediction, ``limit`` points).

        prime: (offsets (T, 3) in data units, their text) to imitate a writer: the text becomes
        c' = prime_text + " " + text and the pen is clamped to the priming strokes (teacher-forced;
        row 0 is replaced by the start input x_1 = 0), then the line runs free from that state.
        The hard length limit is min(max_points, U * max_points_per_char) for a text.
        """
        w = self.weight
        seed = rng.random_seed() if seed is None else seed
        x1 = torch.zeros(3, dtype=w.dtype, device=w.device)  # x_1 = 0: "no prior information" (sec. 2)
        prompt, context = x1[:0, None].expand(0, 3), None
        if self.model.synthesis:
            if text is None:
                raise ValueError("the synthesis network writes a text: pass one")
            self.check_text(text, max_points)
            prefix = ""
            if prime is not None:
                self.check_text(prime[1], what="priming text")
                if len(prime[0]) == 0:
                    raise ValueError("empty priming strokes")
                prefix = prime[1] + " "
            context = torch.as_tensor(self.alphabet.encode(prefix + text))
            limit = min(max_points, max_points_per_char * len(text)) if limit is None else limit
        elif text is not None or prime is not None:
            raise ValueError("the prediction network writes no text and takes no priming text; use a synthesis model")
        elif limit is None:
            raise ValueError("free handwriting needs a length limit (points)")
        if prime is not None:
            p = normalise(prime[0], self.meta, w)
            p[0] = 0  # the start input x_1
            prompt, x1 = p[:-1], p[-1]  # the last priming point is the first free-running input
        rows = [Row(rng.as_seed(seed + i), limit, float(bias), context, keep_aux=keep_phi) for i in range(n)]
        return Job(prompt=prompt, first=x1, rows=rows)

    def page_job(self, texts: list[str], biases: list[float], seed: int, prime: tuple[np.ndarray, str] | None = None,
                 n: int = 1, max_points: int = 1500) -> Job:
        """Several lines as the rows of ONE job (one batch): line i's ``n`` candidates are the rows of
        `job` (text i, bias i, seeds ``seed + i * n + k``), each primed alike. With a prime every row
        reads it under its own text c' = prime text + " " + line (`Job.per_row_prime`), exactly as
        the line's own job would, so a line comes out as it does when written alone with its seed."""
        if len(texts) != len(biases) or not texts:
            raise ValueError("page_job needs one bias per line, and at least one line")
        jobs = [self.job(t, b, seed + i * n, prime, n=n, max_points=max_points)
                for i, (t, b) in enumerate(zip(texts, biases))]
        return Job(prompt=jobs[0].prompt, first=jobs[0].first, rows=[r for j in jobs for r in j.rows],
                   per_row_prime=len(jobs) > 1)

    def check_text(self, text: str, max_points: int | None = None, what: str = "text") -> None:
        """ValueError for an empty text, characters outside the alphabet (naming them), or a text
        longer than ``max_points // POINTS_PER_CHAR`` characters (it could not be written in full)."""
        _check_text(self.alphabet, text, what)
        if max_points is not None and len(text) > (max_chars := max_points // POINTS_PER_CHAR):
            raise ValueError(f"text {text!r} is too long: {len(text)} characters, at most {max_chars} fit in "
                             f"max_points={max_points} at ~{POINTS_PER_CHAR} points a character")


def sample_strokes(model: HandwritingModel, meta: dict, n_points: int = 700, bias: float = DEFAULT_BIAS,
                   seed: int | None = None) -> np.ndarray:
    """Unconditional handwriting from the prediction network: (n_points, 3) offsets in data units."""
    if model.synthesis:
        raise ValueError("sample_strokes needs the prediction network; use synthesize() for text")
    gen = HandwritingGenerator(model, meta)
    (row,) = run(gen, [gen.job(bias=bias, seed=seed, limit=n_points)])[0].rows
    return denormalise(torch.stack(row.outputs), meta)


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


def primed(prime: dict, line: dict) -> tuple[dict, int]:
    """``line`` written after ``prime`` the way priming joins them (Graves sec. 5.5, as
    `HandwritingGenerator.job` does): text prime + " " + line, the prime's pen steps then the line's
    (its origin row dropped: the pen goes on from where the prime ended). Returns the joined line and
    the first target index that belongs to ``line``."""
    joined = {"offsets": np.vstack([prime["offsets"], line["offsets"][1:]]), "text": f"{prime['text']} {line['text']}"}
    return joined, len(prime["offsets"]) - 1


def _check_text(alphabet, text: str, what: str = "text") -> None:
    if not text:
        raise ValueError(f"empty {what}")
    if alphabet.fallback is None and (bad := alphabet.unknown_chars(text)):  # with a fallback class nothing is unknown
        raise ValueError(f"{what} {text!r} has characters not in the model's alphabet: {bad}")


def synthesize(model: HandwritingModel, meta: dict, texts: list[str], bias: float = DEFAULT_BIAS, seed: int | None = None,
               prime: tuple[np.ndarray, str] | None = None, max_points_per_char: int = 40,
               max_points: int = 1500) -> list[Result]:
    """Write ``texts`` in one batch with the synthesis network; row i uses seed ``seed + i``.

    Args:
        prime: (offsets (T, 3) in data units, their text) to imitate a writer, or None (see
            `HandwritingGenerator.job`). Data must share the training data's y direction (negate
            dy of the y-up sjvasquez styles for an IAM-trained model).
        max_points_per_char, max_points: the hard length limit, min(max_points, U * max_points_per_char).
    Raises ValueError for an empty text, characters outside the alphabet (naming them), or a text
    longer than ``max_points // POINTS_PER_CHAR`` characters (it could not be written in full).
    """
    if meta_alphabet(meta) is None or not model.synthesis:
        raise ValueError("synthesize needs the synthesis network and meta['alphabet']")
    if not texts:
        raise ValueError("no texts to write")
    gen = HandwritingGenerator(model, meta)
    seed = rng.random_seed() if seed is None else seed
    jobs = [gen.job(text, bias, seed + i, prime, keep_phi=True, max_points_per_char=max_points_per_char,
                    max_points=max_points) for i, text in enumerate(texts)]
    u0 = 0 if prime is None else len(prime[1]) + 1  # phi over the text itself, not the priming text
    results = []
    for text, job in zip(texts, run(gen, jobs)):
        (row,) = job.rows
        # slice each step before stacking: phi spans the batch's padded context, which narrows
        # when the longest text's row finishes before this one
        phi = torch.stack([a[u0 : u0 + len(text)] for a in row.aux])
        results.append(Result(text, denormalise(torch.stack(row.outputs), meta), phi.float().numpy()))
    return results
