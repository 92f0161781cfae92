"""Priming styles: the 13 shipped lines (the same bytes as the shared data's copies), their flip
to y-down and rescaling to a model's offset statistics, and clear errors for unknown styles."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from seqgen.handwriting import styles
from seqgen.handwriting.iam import load_style

META = {"offset_std": [2.0, 4.0], "offset_mean": [0.0, 0.0], "dataset": "iam"}


def test_thirteen_styles_ship_with_the_package():
    assert styles.shipped_styles() == list(range(13))


def test_shipped_files_are_the_shared_data(shared_data):
    shared = shared_data / "handwriting" / "sjvasquez-styles"
    for n in range(13):
        for part in ("strokes", "chars"):
            name = f"style-{n}-{part}.npy"
            ours = (styles.STYLES_DIR / name).read_bytes()
            assert hashlib.sha256(ours).digest() == hashlib.sha256((shared / name).read_bytes()).digest(), name


def test_flipped_and_rescaled_to_the_model():
    raw, text = load_style(styles.STYLES_DIR, 3)
    offsets, same_text = styles.from_sjvasquez(3, META)
    assert same_text == text and offsets.shape == raw.shape
    np.testing.assert_array_equal(offsets[:, 2], raw[:, 2])  # pen lifts untouched
    scale = offsets[1:, 0].std() / raw[1:, 0].std()
    np.testing.assert_allclose(offsets[:, :2], raw[:, :2] * [scale, -scale], rtol=1e-5, atol=1e-6)  # y down
    np.testing.assert_allclose(offsets[1:, :2].std(), 3.0, rtol=1e-4)  # mean of offset_std


def test_unknown_styles_are_named():
    with pytest.raises(styles.UnknownStyle, match="no priming style 13: the shipped styles are 0-12"):
        styles.resolve_style("13", META)
    with pytest.raises(styles.UnknownStyle, match="'a01-000u-01' is not a shipped style number"):
        styles.resolve_style("a01-000u-01", META, storage=None)
    assert issubclass(styles.UnknownStyle, ValueError)  # the CLI's one-line error


def test_a_dataset_line_as_style(tmp_path):
    """A line id is looked up in the model's dataset on storage (a synthetic IAM-OnDB root)."""
    from seqgen.handwriting.dataset import preprocess_handwriting
    from seqgen.storage import Storage
    from tests.handwriting.test_hw_dataset import write_form

    storage = Storage.from_url(str(tmp_path / "storage"))
    for style in ("a01-000u-01", "-1"):  # no dataset on this storage: the styles on offer, no server path
        with pytest.raises(styles.UnknownStyle, match=f"style '{style}' is neither a shipped style \\(the shipped "
                                                      "styles are 0-12\\) nor a line id of dataset 'iam'") as e:
            styles.resolve_style(style, META, storage)
        assert str(tmp_path) not in str(e.value)
    root = tmp_path / "iam"
    write_form(root, "a01-000u", ["a move to stop", "mr gaitskell"], seed=1)
    write_form(root, "a02-000", ["from nominating"], seed=2)
    preprocess_handwriting(storage, "iam", str(root), use_ray=False)
    ids = styles.dataset_line_ids(storage, "iam")
    assert ids == ["a01-000u-01", "a01-000u-02", "a02-000-01"]
    offsets, text = styles.resolve_style("a01-000u-02", META, storage)
    assert text == "mr gaitskell" and offsets.ndim == 2 and offsets.shape[1] == 3
    with pytest.raises(styles.UnknownStyle, match="'a09-999-01' is not in handwriting dataset 'iam'; the shipped styles are 0-12"):
        styles.resolve_style("a09-999-01", META, storage)
