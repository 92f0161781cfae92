"""Pictures of pen offsets: SVG / PNG lines, the window alignment (Fig. 13), the predictive density (Fig. 10).

Inputs are offset arrays (T, 3) = rows (dx, dy, eos) in data units, as `iam.strokes_to_offsets`
and `sampling.synthesize` produce them; a stroke ends at every row with eos = 1 (the pen lifts).
Direction of y: IAM-OnDB is y-*down* (whiteboard / screen coordinates), like SVG and image rows, so
it is drawn as is; the sjvasquez styles are y-*up* and need ``y_up=True``. Internally every line is
laid out on a y-down page, lines stacked top to bottom.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from html import escape
from typing import Sequence

import numpy as np
import torch
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

from seqgen.handwriting.iam import offsets_to_strokes
from seqgen.handwriting.mdn import MixtureParams, component_log_density, split_mixture

Lines = Sequence[np.ndarray] | np.ndarray


def _as_lines(lines: Lines) -> list[np.ndarray]:
    if isinstance(lines, np.ndarray) and lines.ndim == 2:
        return [lines]
    return [np.asarray(o, dtype=np.float64) for o in lines]


def _strokes(offsets: np.ndarray, y_up: bool) -> list[np.ndarray]:
    """One line's strokes [(n, 2)] in y-down coordinates."""
    strokes = offsets_to_strokes(offsets)
    return [s * (1, -1) for s in strokes] if y_up else strokes


def layout(lines: Lines, y_up: bool = False, line_gap: float = 0.25) -> list[list[np.ndarray]]:
    """Each line's strokes on one y-down page: left-aligned at x = 0, line i's top at i x pitch, with
    pitch = (1 + ``line_gap``) x the tallest line's height (even spacing; an empty line is a blank row)."""
    per_line = [_strokes(o, y_up) for o in _as_lines(lines)]
    heights = [np.ptp(np.concatenate(s)[:, 1]) if s else 0.0 for s in per_line]
    pitch = (1 + line_gap) * max(heights, default=0.0)
    page = []
    for i, strokes in enumerate(per_line):
        if strokes:
            lo = np.concatenate(strokes).min(0)
            strokes = [s - lo + (0.0, i * pitch) for s in strokes]
        page.append(strokes)
    return page


def _extent(page: list[list[np.ndarray]]) -> tuple[float, float]:
    pts = [s for line in page for s in line]
    if not pts:
        return 1.0, 1.0
    hi = np.concatenate(pts).max(0)
    return max(hi[0], 1e-9), max(hi[1], 1e-9)


@dataclass(frozen=True)
class PageStyle:
    """How a page looks: ``width`` of the picture in px (None: 1 data unit = 1 px), ``stroke_width``
    in px at that width (None: 1/40 of a line's height), ``color`` (SVG), ``margin`` in px around the
    writing, ``smooth``: each stroke drawn as a curve through its points (Catmull-Rom splines as cubic
    Beziers) instead of straight segments between them."""

    width: float | None = None
    stroke_width: float | None = None
    color: str = "black"
    margin: float | None = None
    smooth: bool = True


def _polyline(s: np.ndarray) -> str:
    d = "M" + " L".join(f"{x:.2f},{y:.2f}" for x, y in s)
    return d + (" l0,0" if len(s) == 1 else "")  # a dot: drawn by the round cap


def catmull_rom(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Control points (c1, c2), each (n - 1, 2), of the cubic Beziers of a Catmull-Rom spline through
    the n points of a stroke (it passes through them all, with a continuous tangent): the segment
    P_i -> P_{i+1} has c1 = P_i + (P_{i+1} - P_{i-1}) / 6 and c2 = P_{i+1} - (P_{i+2} - P_i) / 6
    (the end points repeat)."""
    p = np.vstack([s[:1], s, s[-1:]])
    return p[1:-2] + (p[2:-1] - p[:-3]) / 6, p[2:-1] - (p[3:] - p[1:-2]) / 6


def _curve(s: np.ndarray) -> str:
    """A stroke as the SVG path of its Catmull-Rom spline (`catmull_rom`)."""
    if len(s) < 3:
        return _polyline(s)
    c1, c2 = catmull_rom(s)
    ends = s[1:]
    return f"M{s[0, 0]:.2f},{s[0, 1]:.2f} " + " ".join(
        f"C{a:.2f},{b:.2f} {c:.2f},{d:.2f} {e:.2f},{f:.2f}" for (a, b), (c, d), (e, f) in zip(c1, c2, ends))


def strokes_svg(lines: Lines, *, y_up: bool = False, line_gap: float = 0.25, stroke_width: float | None = None,
                width: float | None = None, color: str = "black", margin: float | None = None,
                smooth: bool = True) -> str:
    """An SVG document with one ``<path>`` per stroke, lines stacked vertically (`layout`).

    ``width`` (px) scales the picture (default: 1 data unit = 1 px); ``stroke_width`` and ``margin``
    are px at that width (defaults: 1/40 and 1/10 of a line's height); see `PageStyle`.
    """
    page = layout(lines, y_up, line_gap)
    W, H = _extent(page)
    line_height = H / max(sum(1 for line in page if line), 1) if any(page) else H
    sw_units = line_height / 40
    pad_units = line_height / 10
    if width is not None:  # px -> data units: the writing spans width - 2 margins
        margin_px = pad_units * width / (W + 2 * pad_units) if margin is None else margin
        per_px = W / max(width - 2 * margin_px, 1e-9)
        pad_units = margin_px * per_px
        sw_units = sw_units if stroke_width is None else stroke_width * per_px
    else:
        pad_units = pad_units if margin is None else margin
        sw_units = sw_units if stroke_width is None else stroke_width
    vb_w, vb_h = W + 2 * pad_units, H + 2 * pad_units
    px_w = width or vb_w
    draw = _curve if smooth else _polyline
    paths = [f'<path d="{draw(s + pad_units)}"/>' for line in page for s in line]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{px_w:.1f}" height="{px_w * vb_h / vb_w:.1f}" '
        f'viewBox="0 0 {vb_w:.2f} {vb_h:.2f}">\n'
        f'<g fill="none" stroke="{escape(color, quote=True)}" stroke-width="{sw_units:.3f}" stroke-linecap="round" '
        f'stroke-linejoin="round">\n'
        + "\n".join(paths)
        + "\n</g>\n</svg>\n"
    )


MAX_PNG_PIXELS = 16_000_000  # a page of many lines at a large width is scaled down to this


def svg_png(svg: str, background: str | None = "white", max_pixels: int = MAX_PNG_PIXELS) -> bytes:
    """An SVG (e.g. `strokes_svg`) rasterised by resvg at its own width and height in px, scaled
    down to at most ``max_pixels``. resvg is a complete, standalone SVG renderer (a Rust library
    shipped as a self-contained wheel, nothing from the system), so the PNG shows exactly what the
    SVG does: the same curves, caps and colour."""
    import xml.etree.ElementTree as ET

    import resvg_py

    root = ET.fromstring(svg)
    w, h = float(root.get("width")), float(root.get("height"))
    width = max(1, int(min(w, math.sqrt(max_pixels * w / max(h, 1e-9)))))
    return bytes(resvg_py.svg_to_bytes(svg_string=svg, background=background, width=width))


def _png(fig: Figure, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _draw_strokes(ax, page, color="black", linewidth=1.5) -> None:
    for line in page:
        for s in line:
            ax.plot(s[:, 0], s[:, 1], color=color, linewidth=linewidth, solid_capstyle="round",
                    marker="." if len(s) == 1 else None)  # a one-point stroke is a dot


def strokes_png(lines: Lines, *, y_up: bool = False, line_gap: float = 0.25, width_inches: float = 10.0,
                linewidth: float = 1.5, dpi: int = 100) -> bytes:
    """The same picture as `strokes_svg`, as PNG bytes (matplotlib, Agg)."""
    page = layout(lines, y_up, line_gap)
    W, H = _extent(page)
    fig = Figure(figsize=(width_inches, min(max(width_inches * H / W, 0.5), 4 * width_inches)))
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.98))
    _draw_strokes(ax, page, linewidth=linewidth)
    ax.set_aspect("equal")
    ax.invert_yaxis()  # the page is y-down
    ax.axis("off")
    return _png(fig, dpi)


def phi_heatmap_png(phi: np.ndarray, text: str, *, dpi: int = 100) -> bytes:
    """Window weights phi(t, u) (T, U) as Graves' Fig. 13: pen points t along the horizontal axis,
    the text's characters u down the vertical axis."""
    phi = np.asarray(phi, dtype=np.float64)
    T, U = phi.shape
    fig = Figure(figsize=(min(max(T / 40, 4), 20), min(max(U / 4, 2), 12)))
    ax = fig.add_subplot()
    ax.imshow(phi.T, aspect="auto", origin="upper", cmap="Greys", interpolation="nearest")
    ax.set_yticks(range(U), [c if c != " " else "\u2423" for c in text[:U]], fontsize=max(4, min(10, 400 / max(U, 1))))
    ax.set_xlabel("t (pen point)")
    ax.set_ylabel("u (character)")
    fig.tight_layout()
    return _png(fig, dpi)


def mixture_density(offsets: np.ndarray, yhat, M: int, *, offset_mean=(0.0, 0.0), offset_std=(1.0, 1.0),
                    y_up: bool = False, radius: float = 4.0, resolution: int = 500):
    """The picture of Graves' Fig. 10: the predicted density of every next pen position, summed over a line.

    Args:
        offsets: (T, 3) the line in data units; yhat: (T', 6M + 1) the network's raw outputs read
            along it (``sampling.read_line``), yhat[t] predicting offsets[t + 1]; T' <= T.
        offset_mean, offset_std: the normalisation the network was trained with.
        radius: each step's density is evaluated within +-radius normalised units (std) of the pen's
            mean move; the mass of components predicted further away is left out of the picture.
        resolution: grid cells along the line's length.
    At step t the pen is at P_t = sum_{s <= t} offsets[s]; the next position P_t + mean + std * d,
    d ~ sum_j pi^j N(mu^j, sigma^j, rho^j) (eqs. 19-25), has density
    sum_j pi^j N((p - P_t - mean) / std | ...) / (std_x std_y) at point p (eos is ignored).
    Returns (density (ny, nx) per square data unit on a y-down page, extent (left, right, bottom,
    top) for ``imshow(origin="upper")``, the line's strokes in page coordinates).
    """
    offsets = np.asarray(offsets, dtype=np.float64)
    params = split_mixture(torch.as_tensor(np.asarray(yhat), dtype=torch.float32), M)
    n = min(len(offsets), params.mu.shape[0])
    sign = np.array([1.0, -1.0 if y_up else 1.0])  # page coordinates are y-down
    mean, std = np.asarray(offset_mean, float), np.asarray(offset_std, float)
    strokes = [s * sign for s in offsets_to_strokes(offsets)]
    pts = np.concatenate(strokes)
    lo = pts.min(0) - 0.05 * np.ptp(pts, 0).max() - radius * std
    hi = pts.max(0) + 0.05 * np.ptp(pts, 0).max() + radius * std
    cell = (hi[0] - lo[0]) / resolution
    shape = np.ceil((hi - lo) / cell).astype(int)[::-1]  # (ny, nx)
    # one (2h+1)^2-cell patch per step, centred on the cell of the mean move P_t + mean
    centre = np.cumsum(offsets[:n, :2], 0) + mean  # data coordinates, (n, 2)
    ci = np.floor((centre * sign - lo) / cell).astype(int)  # (n, 2) cells (ix, iy)
    h = np.minimum(np.ceil(radius * std / cell).astype(int), shape[::-1])
    ix = torch.as_tensor(ci[:, 0, None] + np.arange(-h[0], h[0] + 1))  # (n, px)
    iy = torch.as_tensor(ci[:, 1, None] + np.arange(-h[1], h[1] + 1))  # (n, py)
    IY, IX = iy[:, :, None].expand(-1, -1, ix.shape[1]), ix[:, None, :].expand(-1, iy.shape[1], -1)  # (n, py, px)
    inside = (IX >= 0) & (IX < shape[1]) & (IY >= 0) & (IY < shape[0])
    density = torch.zeros(*shape, dtype=torch.float64)
    chunk = max(1, 2**21 // (IX[0].numel() * M))  # steps per block: keeps the (tc, py, px, M) temporaries small
    for ts in torch.arange(n).split(chunk):
        page = torch.stack([lo[0] + (IX[ts] + 0.5) * cell, lo[1] + (IY[ts] + 0.5) * cell], -1)  # cell centres
        d = (page * torch.as_tensor(sign) - torch.as_tensor(centre[ts])[:, None, None]) / torch.as_tensor(std)
        p = MixtureParams(*(q[ts][:, None, None] for q in params))  # broadcast over the patch
        log_p = torch.logsumexp(p.log_pi + component_log_density(p, d.float()), -1) - math.log(std.prod())
        m = inside[ts]
        density.index_put_((IY[ts][m], IX[ts][m]), log_p.exp()[m].double(), accumulate=True)
    extent = (lo[0], lo[0] + shape[1] * cell, lo[1] + shape[0] * cell, lo[1])
    return density.numpy(), extent, strokes


def mixture_density_png(offsets: np.ndarray, yhat, M: int, *, dpi: int = 100, **kw) -> bytes:
    """`mixture_density` as a heatmap (square-root colour scale, so faint steps stay visible) with
    the line drawn on top (Fig. 10). ``kw``: offset_mean, offset_std, y_up, radius, resolution."""
    density, extent, strokes = mixture_density(offsets, yhat, M, **kw)
    ny, nx = density.shape
    fig = Figure(figsize=(10, min(max(10 * ny / nx, 1.0), 10)))
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.98))
    ax.imshow(density, extent=extent, origin="upper", cmap="magma", norm=PowerNorm(0.5, vmin=0.0),
              interpolation="bilinear")
    _draw_strokes(ax, [strokes], color="white", linewidth=0.6)
    ax.axis("off")
    return _png(fig, dpi)
