"""SVG / PNG drawings of pen offsets, the phi heatmap (Fig. 13) and the predictive density (Fig. 10)."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

from seqgen.handwriting.mdn import output_size
from seqgen.handwriting.render import mixture_density, mixture_density_png, phi_heatmap_png, strokes_png, strokes_svg

PNG = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"

# two strokes: a downward tick (dy > 0 in the data) then, after a pen lift, a dot
LINE = np.array([[0, 0, 0], [0, 10, 0], [5, 5, 1], [10, -10, 1]], dtype=np.float32)


def paths(svg: str) -> list[np.ndarray]:
    root = ET.fromstring(svg)
    out = []
    for p in root.iter(f"{SVG}path"):
        pts = p.get("d").replace("M", "").replace("l0,0", "").split("L")
        out.append(np.array([[float(v) for v in pt.split(",")] for pt in pts]))
    return out


def test_svg_one_path_per_stroke_and_y_direction():
    down = paths(strokes_svg(LINE, smooth=False))  # IAM: y grows downward, as in SVG: drawn as is
    assert len(down) == 2 and [len(p) for p in down] == [3, 1]
    assert down[0][1, 1] > down[0][0, 1]  # dy = +10 goes down the page
    up = paths(strokes_svg(LINE, y_up=True, smooth=False))  # sjvasquez styles: flipped
    assert up[0][1, 1] < up[0][0, 1]
    np.testing.assert_allclose(np.diff(down[0], axis=0), [[0, 10], [5, 5]], atol=0.02)  # pen lifts respected


def test_svg_stacks_lines_top_to_bottom():
    two = paths(strokes_svg([LINE, LINE], smooth=False))
    assert len(two) == 4
    first_bottom = max(p[:, 1].max() for p in two[:2])
    assert min(p[:, 1].min() for p in two[2:]) > first_bottom


def test_pngs_are_png():
    assert strokes_png([LINE, LINE]).startswith(PNG)
    phi = np.random.default_rng(0).random((20, 4))
    assert phi_heatmap_png(phi, "ab c").startswith(PNG)


def test_mixture_density_integrates_to_one_per_step_and_sits_on_the_next_point():
    """A sharp one-component prediction of the true next offset: mass 1 per step, peaks on the line."""
    rng = np.random.default_rng(0)
    offsets = np.c_[rng.normal(3, 1, (30, 2)), np.zeros(30)]
    mean, std = np.array([3.0, 0.0]), np.array([1.0, 2.0])
    M = 2
    yhat = torch.zeros(29, output_size(M))
    yhat[:, 1:3] = torch.tensor([0.0, -30.0])  # pi ~ (1, 0)
    yhat[:, 3:5] = torch.as_tensor((offsets[1:, :2] - mean) / std)  # mu^1 = the true next offset
    yhat[:, 7:11] = -1.0  # sigma = e^-1 std
    density, (left, right, bottom, top), _ = mixture_density(offsets, yhat, M, offset_mean=mean, offset_std=std,
                                                             radius=6, resolution=300)
    cell = (right - left) / density.shape[1]
    assert abs(density.sum() * cell**2 - 29) < 0.3
    points = np.cumsum(offsets[:, :2], 0)[1:]  # P_{t+1}, where each step's mass should sit
    ix, iy = ((points - [left, top]) / cell).astype(int).T
    peak = 1 / (2 * np.pi * np.prod(np.exp(-1) * std))  # one component's density at its mean
    assert (density[iy, ix] > 0.3 * peak).all()
    assert mixture_density_png(offsets, yhat, M, offset_mean=mean, offset_std=std).startswith(PNG)


def test_smooth_strokes_are_curves_through_every_point():
    line = np.array([[0, 0, 0], [10, 5, 0], [10, 5, 0], [5, 10, 0], [0, 0, 1]], dtype=np.float32)
    svg = strokes_svg(line, smooth=True, margin=0)
    (d,) = [p.get("d") for p in ET.fromstring(svg).iter(f"{SVG}path")]
    assert d.count("C") == 4 and "L" not in d
    ends = np.array([[float(v) for v in seg.split()[-1].split(",")] for seg in d.split("C")[1:]])
    np.testing.assert_allclose(ends, np.cumsum(line[1:, :2], 0) - [0, 0], atol=0.01)  # it passes through the points


def test_page_style_width_colour_stroke_and_margin():
    svg = strokes_svg([LINE, np.zeros((0, 3)), LINE], width=400, stroke_width=3, color="#a01020", margin=20)
    root = ET.fromstring(svg)
    assert float(root.get("width")) == 400
    g = root.find(f"{SVG}g")
    assert g.get("stroke") == "#a01020"
    vb = [float(v) for v in root.get("viewBox").split()]
    per_px = vb[2] / 400
    assert float(g.get("stroke-width")) == pytest.approx(3 * per_px, rel=1e-3)
    xs = np.concatenate([p[:, 0] for p in paths(strokes_svg(LINE, width=400, margin=20, smooth=False))])
    assert xs.min() == pytest.approx(20 * per_px, rel=1e-2)  # the margin, in px at the page's width
    two = paths(strokes_svg([LINE, np.zeros((0, 3)), LINE], smooth=False))
    first, last = two[0][:, 1].min(), two[2][:, 1].min()
    assert last - first == pytest.approx(2 * 1.25 * 15, rel=1e-3)  # the blank line keeps its row


def test_png_is_rasterised_from_the_svg():
    from seqgen.handwriting.render import svg_png

    png = svg_png(strokes_svg([LINE, LINE], width=300, color="#ff0000"))
    assert png.startswith(PNG)
    import matplotlib.image

    img = matplotlib.image.imread(__import__("io").BytesIO(png))
    assert img.shape[1] == 300
    red = (img[..., 0] > 0.8) & (img[..., 1] < 0.3) & (img[..., 3] > 0.5)
    assert red.sum() > 50  # the strokes, in their colour, on white
