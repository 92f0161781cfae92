"""Priming with your own strokes: absolute points -> the model's inputs, as the training data was made.

The ``data`` test runs a real IAM-OnDB line through the dataset builder (`preprocess_handwriting`,
in-process on memory://) and through the prime path, and compares the network inputs."""

from __future__ import annotations

import json
import uuid

import fsspec
import numpy as np
import pytest
import torch

from seqgen.handwriting.dataset import load_lines, preprocess_handwriting
from seqgen.handwriting.iam import discover_forms, offsets_to_strokes, strokes_to_offsets
from seqgen.handwriting.prime import (
    MAX_PRIME_POINTS, ink_per_char, match_density, pen_step, pen_steps, points_to_strokes, prime_from_points,
    read_prime_file, read_prime_xml, strokes_to_points, writing_scale, writing_size,
)
from seqgen.handwriting.render import catmull_rom
from seqgen.handwriting.sampling import normalise
from seqgen.storage import Storage

LIKE = torch.zeros(1)


def _drawing(seed=0):
    """Three strokes of a random walk, as a canvas gives them (pixels, y down)."""
    rng = np.random.default_rng(seed)
    return [np.cumsum(rng.normal(2, 3, (n, 2)), 0) + 300 for n in (30, 12, 25)]


def test_points_and_strokes_round_trip():
    strokes = _drawing()
    points = strokes_to_points(strokes)
    assert points.shape == (67, 3) and points[:, 2].sum() == 3 and points[-1, 2] == 1
    back = points_to_strokes(points)
    assert [len(s) for s in back] == [30, 12, 25]
    for a, b in zip(back, strokes):
        np.testing.assert_array_equal(a, b)
    points[-1, 2] = 0  # the last stroke left open is still a stroke
    assert [len(s) for s in points_to_strokes(points)] == [30, 12, 25]


@pytest.mark.parametrize("points, message", [
    ([[1, 2, 1]], "at least 2 points"),
    ([], "shape"),
    ([[1, 2], [3, 4]], "shape"),
    ([[1, 2, 0], [float("nan"), 4, 1]], "not finite"),
    ([[1, 2, 0], [float("inf"), 4, 1]], "not finite"),
])
def test_bad_points_are_named(points, message):
    with pytest.raises(ValueError, match=message):
        points_to_strokes(points)


def test_ink_per_char_counts_pen_down_ink_per_letter():
    strokes = [np.array([[0, 0], [3, 4], [3, 10]]), np.array([[100, 0]])]  # 5 + 6 of ink; the dot has none
    assert ink_per_char(strokes, "ab c") == pytest.approx(11 / 3)  # spaces are not letters


def test_a_drawing_is_scaled_to_the_training_data_size_wherever_it_is_and_however_big():
    strokes, text = _drawing(), "hello"
    meta = {"ink_per_char": 400.0, "offset_mean": [8.0, 0.1], "offset_std": [41.0, 37.0]}
    offsets, _, scale = prime_from_points(strokes_to_points(strokes), text, meta)
    assert ink_per_char(offsets_to_strokes(offsets), text) == pytest.approx(400.0, rel=1e-5)
    bigger = [s * 7.5 - 1000 for s in strokes]  # another unit and origin: the same inputs
    again, _, scale7 = prime_from_points(strokes_to_points(bigger), text, meta)
    assert scale7 == pytest.approx(scale / 7.5)
    np.testing.assert_allclose(again, offsets, atol=1e-3)


def test_a_drawing_without_ink_is_measured_by_its_path_and_a_checkpoint_without_a_size_is_refused():
    dots = [np.array([[0.0, 0.0]]), np.array([[30.0, 40.0]]), np.array([[30.0, 40.0]])]  # only pen-up moves: 50
    assert writing_scale(dots, "abcde", {"ink_per_char": 400.0}) == pytest.approx(400 / 10)
    still = np.array([[5.0, 5.0, 0], [5.0, 5.0, 0], [5.0, 5.0, 1]])
    offsets, _, scale = prime_from_points(still, "abc", {"ink_per_char": 400.0})
    assert scale == 1.0 and not offsets[:, :2].any()
    with pytest.raises(ValueError, match="ink_per_char"):
        writing_scale(_drawing(), "abc", {})
    with pytest.raises(ValueError, match="within"):
        prime_from_points([[0, 0, 0], [2e6, 0, 1]], "abc", {"ink_per_char": 400.0})


def _wave(n: int) -> np.ndarray:
    """A smooth stroke of n points, one unit apart along x."""
    x = np.arange(n, dtype=np.float64)
    return np.column_stack([x, 10 * np.sin(x / 6)])


def test_a_sparse_drawing_gets_points_along_its_curve():
    sparse = [_wave(60)[::3], _wave(2), _wave(1)]  # steps ~3 long; a two-point stroke and a dot
    meta = {"pen_step": float(np.median(pen_steps(sparse))) / 3}
    resampled = match_density(sparse, 1.0, meta)
    assert [len(s) for s in resampled] == [(20 - 1) * 3 + 1, 4, 1]
    np.testing.assert_allclose(resampled[0][::3], sparse[0])  # the drawn points stay, in order
    c1, c2 = catmull_rom(sparse[0])  # the new ones lie on the curve the SVG draws through them
    t = 1 / 3
    on_curve = (1 - t) ** 3 * sparse[0][:-1] + 3 * (1 - t) ** 2 * t * c1 + 3 * (1 - t) * t**2 * c2 + t**3 * sparse[0][1:]
    np.testing.assert_allclose(resampled[0][1::3], on_curve)
    np.testing.assert_allclose(resampled[1], [[0, 0], [1 / 3, 10 * np.sin(1 / 6) / 3], [2 / 3, 20 * np.sin(1 / 6) / 3],
                                              [1, 10 * np.sin(1 / 6)]], atol=1e-12)  # two points: the segment
    assert np.median(pen_steps(resampled)) == pytest.approx(meta["pen_step"], rel=0.05)
    # far closer to the pen's real path than straight segments (inside the stroke: its end segments
    # repeat their end points): the wave's skipped points
    truth = _wave(58)[1::3][1:-1]
    straight = (sparse[0][:-1] + (sparse[0][1:] - sparse[0][:-1]) / 3)[1:-1]
    assert np.abs(resampled[0][1::3][1:-1] - truth).mean() < np.abs(straight - truth).mean() / 5


def test_a_dense_drawing_keeps_every_kth_point_and_a_close_one_is_left_alone():
    dense = [_wave(31), _wave(5)]
    step = float(np.median(pen_steps(dense)))
    thinned = match_density(dense, 1.0, {"pen_step": 3 * step})
    np.testing.assert_array_equal(thinned[0], dense[0][::3])  # 0, 3, ..., 30: the last is kept too
    np.testing.assert_array_equal(thinned[1], dense[1][[0, 3, 4]])
    for meta in ({"pen_step": 1.3 * step}, {"pen_step": step / 1.3}, {}):  # within 1.5x, or no density known
        assert match_density(dense, 1.0, meta) is dense
    assert match_density(dense, 3.0, {"pen_step": 3 * step}) is dense  # measured at the training size (scale)


def test_resampling_never_makes_a_prime_longer_than_its_limit():
    long = [_wave(900)[::2] * 2]  # 450 points, steps of ~4
    meta = {"pen_step": 4.0 / 6}  # 6x too sparse: 6 x 449 + 1 points would pass the limit
    resampled = match_density(long, 1.0, meta)
    assert len(resampled[0]) == 449 * 4 + 1 <= MAX_PRIME_POINTS
    full = [_wave(1500)]  # no room for even one point a step
    assert match_density(full, 1.0, {"pen_step": 1 / 3}) is full


def test_prime_files(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"text": "hello", "strokes": [[0, 0, 0], [1, 1, 1]]}))
    assert read_prime_file(path) == ([[0, 0, 0], [1, 1, 1]], "hello")
    path.write_text('{"strokes": []}')
    with pytest.raises(ValueError, match="expected"):
        read_prime_file(path)
    path.write_text("[1, 2")
    with pytest.raises(ValueError, match="not JSON"):
        read_prime_file(path)


@pytest.mark.data
def test_a_real_iam_line_primes_with_exactly_the_datasets_inputs(shared_data):
    """A line of a real form, as absolute points (its lineStrokes XML), through the prime path
    == the dataset's own inputs for that line: offsets scaled to the training size, normalised alike."""
    root = shared_data / "handwriting" / "iam-ondb"
    form = next(f for f in discover_forms(root) if f.transcription and len(f.lines) >= 2)
    storage = Storage.from_url(f"memory://prime-{uuid.uuid4().hex}")
    try:
        manifest = preprocess_handwriting(storage, "iam", str(root), splits={"train": [form.form_id]},
                                          use_ray=False)
        lines = load_lines(storage, manifest, "train")
    finally:
        fsspec.filesystem("memory").rm(storage.url_of(""), recursive=True)
    line = lines[1]
    meta = {"offset_mean": manifest["offset_mean"], "offset_std": manifest["offset_std"], "ink_per_char": writing_size(lines),
            "pen_step": pen_step(lines)}  # an IAM line is sampled as the training data: not resampled
    points = read_prime_xml(form.lines[1])
    assert points[:, 2].sum() == sum(line["offsets"][:, 2])  # one pen lift per stroke
    offsets, _, scale = prime_from_points(points, line["text"], meta)
    np.testing.assert_allclose(offsets[:, :2], line["offsets"][:, :2] * np.float32(scale), rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(offsets[:, 2], line["offsets"][:, 2])
    # the size of the line itself is the training size: the network reads exactly the dataset's inputs
    meta["ink_per_char"] = ink_per_char(offsets_to_strokes(line["offsets"]), line["text"])
    own, _, scale = prime_from_points(points, line["text"], meta)
    assert scale == pytest.approx(1.0, abs=1e-9)
    torch.testing.assert_close(normalise(own, meta, LIKE), normalise(line["offsets"], meta, LIKE), rtol=1e-6, atol=1e-6)
    assert len(strokes_to_offsets(points_to_strokes(points))) == len(line["offsets"])
