"""Priming with your own strokes (Graves sec. 5.5): a line someone drew -> the model's inputs, made
exactly as the training data was made.

    points [[x, y, pen_up], ...]  absolute, any unit, y down (a canvas, a tablet, an IAM-OnDB XML)
      --split after every pen_up = 1-->  strokes [(n_i, 2)]                    (`points_to_strokes`)
      --`iam.strokes_to_offsets`, the IAM preprocessing itself (offsets, outlier steps, gaps)-->
      --(dx, dy) x (training data's ink per character / the drawing's)-->    (`writing_scale`)
      (before the offsets: points added along a curve or left out to the training data's density,
       `match_density`)
      offsets (T, 3) in data units, which `HandwritingGenerator.job(prime=...)` normalises with the
      dataset's mean / std like every training line.

The size: a drawing's coordinates can be pixels, tablet units or whiteboard units, and the network
only knows IAM-OnDB's. Offsets are scale-dependent after normalisation, so the drawing is scaled so
that its *ink per character* (pen-down path length / characters of its text, spaces excluded)
equals the training data's median (``meta["ink_per_char"]``, measured by `writing_size` from the
training lines and stored with the checkpoint). Ink per character does not depend on how often the
pen was sampled, unlike points per character, and unlike the height of a line it does not depend on
which letters have ascenders. The thresholds of `strokes_to_offsets` are in units of the line's own
median step, so scaling the drawing before them or its offsets after them is the same; scaling
after keeps the conversion of an IAM-OnDB line bit-for-bit that of the dataset (a step exactly
k median steps long cannot round to k + 1 interpolated steps).

The density: a mouse reports a point per screen frame, a tablet several times as often, and the
network has only seen IAM-OnDB's rate. A prime drawn at a third of the training data's points
(every third point of a validation line) made its writer's next line 0.12 nats per point less
likely; the same points with points added back along the Catmull-Rom curve through them cost
nothing (docs/handwriting.md, "How densely a drawing is sampled"). So a drawing whose median pen
step (at the training size) is off the training lines' (``meta["pen_step"]``) by more than
`DENSITY_TOLERANCE` is resampled: each step split into k along that curve, or every k-th point
kept; an IAM-OnDB line is within the tolerance and goes through untouched.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from seqgen.handwriting.iam import offsets_to_strokes, read_line_strokes, strokes_to_offsets

MIN_PRIME_POINTS = 100  # with MAX_PRIME_CHARS: at least 2 points per character, see `check_prime_text`
MAX_PRIME_POINTS = 2000  # an IAM-OnDB line has ~700 (sec. 4.2), the longest in the shared subset ~1,900
MIN_PRIME_CHARS = 4  # with MAX_PRIME_POINTS: at most 500 points per character
MAX_PRIME_CHARS = 50
MAX_COORDINATE = 1e6  # |x|, |y|: far beyond a screen or a whiteboard, and far from float overflow
DENSITY_TOLERANCE = 1.5  # the validation lines' own median steps are 0.96x the training data's


def points_to_strokes(points) -> list[np.ndarray]:
    """Absolute points (N, 3) rows (x, y, pen_up), pen_up = 1 on the last point of each stroke ->
    strokes [(n_i, 2) float64]. A last stroke left open (no final pen_up) is still a stroke.
    ValueError for fewer than 2 points, rows that are not (x, y, pen_up), or values that are not finite."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"prime strokes must be rows [x, y, pen_up], got an array of shape {p.shape}")
    if len(p) < 2:
        raise ValueError(f"prime strokes need at least 2 points, got {len(p)}")
    if not np.isfinite(p).all():
        raise ValueError("prime strokes hold values that are not finite (NaN or infinity)")
    ends = np.flatnonzero(p[:-1, 2] > 0.5) + 1
    return [s[:, :2] for s in np.split(p, ends)]


def strokes_to_points(strokes) -> np.ndarray:
    """The inverse of `points_to_strokes`: strokes [(n_i, 2)] -> (N, 3) rows (x, y, pen_up)."""
    rows = [np.column_stack([s, np.r_[np.zeros(len(s) - 1), 1.0]]) for s in strokes if len(s)]
    return np.concatenate(rows)


def _letters(text: str) -> int:
    return max(len(text.replace(" ", "")), 1)


def ink_per_char(strokes, text: str) -> float:
    """Pen-down path length of ``strokes`` [(n_i, 2)] per character of ``text`` (spaces excluded)."""
    ink = sum(float(np.hypot(*np.diff(s, axis=0).T).sum()) for s in strokes if len(s) > 1)
    return ink / _letters(text)


def writing_size(lines) -> float:
    """The training data's typical writing size: median ink per character over ``lines`` (dicts with
    ``offsets`` (T, 3) in data units and ``text``, as `dataset.load_lines` returns them)."""
    sizes = [ink_per_char(offsets_to_strokes(line["offsets"]), line["text"]) for line in lines]
    sizes = [s for s in sizes if s > 0]
    if not sizes:
        raise ValueError("no line with ink to measure the writing size from")
    return float(np.median(sizes))


def pen_steps(strokes) -> np.ndarray:
    """The lengths of the pen-down steps of ``strokes`` [(n_i, 2)]."""
    return np.concatenate([np.hypot(*np.diff(s, axis=0).T) for s in strokes if len(s) > 1] or [np.zeros(0)])


def pen_step(lines) -> float:
    """The training data's sampling density: the median pen-down step over ``lines`` (as `writing_size`)."""
    steps = pen_steps([s for line in lines for s in offsets_to_strokes(line["offsets"])])
    if not len(steps):
        raise ValueError("no line with ink to measure the pen step from")
    return float(np.median(steps))


def _along_curve(s: np.ndarray, k: int) -> np.ndarray:
    """Stroke ``s`` (n, 2) with every step split into ``k`` along the Catmull-Rom spline through its
    points (`render.catmull_rom`, the curve the SVG draws): (n - 1) k + 1 points, ``s`` among them."""
    if len(s) < 2:
        return s
    if len(s) == 2:
        c1, c2 = s[:1] + (s[1:] - s[:1]) / 3, s[:1] + 2 * (s[1:] - s[:1]) / 3  # a straight segment
    else:
        from seqgen.handwriting.render import catmull_rom

        c1, c2 = catmull_rom(s)
    t = (np.arange(k) / k)[:, None, None]  # the cubic Bezier of each step at t = 0, 1/k, ...
    a, d = s[:-1][None], s[1:][None]
    pts = (1 - t) ** 3 * a + 3 * (1 - t) ** 2 * t * c1[None] + 3 * (1 - t) * t**2 * c2[None] + t**3 * d
    return np.vstack([pts.transpose(1, 0, 2).reshape(-1, 2), s[-1:]])


def match_density(strokes, scale: float, meta: dict) -> list[np.ndarray]:
    """``strokes`` resampled to the training data's pen step (``meta["pen_step"]``) when their own
    median step, times ``scale`` (`writing_scale`), is off it by more than `DENSITY_TOLERANCE`: each
    step split into k along the curve through the points (never past `MAX_PRIME_POINTS`), or every
    k-th point kept (and each stroke's last). As they are otherwise, or without ``pen_step``."""
    steps = pen_steps(strokes) * scale
    if "pen_step" not in meta or not len(steps) or not np.median(steps) > 0:
        return strokes
    ratio = float(np.median(steps)) / meta["pen_step"]
    if ratio >= DENSITY_TOLERANCE:
        n, gaps = sum(len(s) for s in strokes), sum(max(len(s) - 1, 0) for s in strokes)
        k = min(round(ratio), (MAX_PRIME_POINTS - (n - gaps)) // max(gaps, 1))
        return [_along_curve(s, k) for s in strokes] if k >= 2 else strokes
    if ratio <= 1 / DENSITY_TOLERANCE:
        k = round(1 / ratio)
        return [s[sorted({*range(0, len(s), k), len(s) - 1})] for s in strokes]
    return strokes


def writing_scale(strokes, text: str, meta: dict) -> float:
    """The factor that gives the drawing the training data's ink per character (``meta["ink_per_char"]``).

    A drawing without ink (the pen never moves while down: only dots) is measured by its whole path,
    pen-up moves included, and one whose points all coincide is taken as it is (scale 1): nothing in
    it has a size, and it is still a (strange) prime the network can read."""
    if "ink_per_char" not in meta:
        raise ValueError("this checkpoint does not record its training data's writing size (meta 'ink_per_char'): "
                         "it cannot be primed with strokes of another size")
    drawn = ink_per_char(strokes, text) or ink_per_char([np.concatenate(strokes)], text)
    scale = meta["ink_per_char"] / drawn if drawn > 0 else 1.0
    return float(scale) if np.isfinite(scale) else 1.0


def check_prime_text(text: str, n_points: int) -> None:
    """ValueError naming the limit a prime breaks: its text's length, or its points (see the constants)."""
    if not MIN_PRIME_CHARS <= len(text) <= MAX_PRIME_CHARS:
        raise ValueError(f"the prime's text must have {MIN_PRIME_CHARS}-{MAX_PRIME_CHARS} characters "
                         f"(the line that was drawn), got {len(text)}")
    if not MIN_PRIME_POINTS <= n_points <= MAX_PRIME_POINTS:
        raise ValueError(f"the prime must have {MIN_PRIME_POINTS}-{MAX_PRIME_POINTS} points, got {n_points}")


def prime_from_points(points, text: str, meta: dict) -> tuple[np.ndarray, str, float]:
    """A drawn line -> (offsets (T, 3) float32 in data units, its text, the scale applied), ready for
    ``HandwritingGenerator.job(prime=(offsets, text))``."""
    strokes = points_to_strokes(points)
    if np.abs(np.concatenate(strokes)).max() > MAX_COORDINATE:
        raise ValueError(f"prime coordinates must be within +-{MAX_COORDINATE:g}")
    scale = writing_scale(strokes, text, meta)
    offsets = strokes_to_offsets(match_density(strokes, scale, meta))
    offsets[:, :2] *= np.float32(scale)
    return offsets, text, scale


def as_drawn(line: dict, meta: dict) -> dict:
    """A stored line (offsets in data units, text) as it primes when someone draws it on a page: its
    absolute points through `prime_from_points`, so at the training data's typical size (the
    style-transfer measurement of docs/handwriting.md: does a drawn prime carry its writer's hand?)."""
    points = strokes_to_points(offsets_to_strokes(line["offsets"]))
    return {**line, "offsets": prime_from_points(points, line["text"], meta)[0]}


def read_prime_file(path: str | Path) -> tuple[list, str]:
    """A prime saved as JSON ``{"text": ..., "strokes": [[x, y, pen_up], ...]}`` (the body of
    ``POST /write``'s ``prime``) -> (points, text). ValueError for anything else."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("text"), str) or not isinstance(data.get("strokes"), list):
        raise ValueError(f'{path}: expected {{"text": "...", "strokes": [[x, y, pen_up], ...]}}')
    return data["strokes"], data["text"]


def read_prime_xml(path: str | Path) -> np.ndarray:
    """An IAM-OnDB lineStrokes XML -> absolute points (N, 3) rows (x, y, pen_up)."""
    return strokes_to_points(read_line_strokes(str(path)))
