"""Priming styles (sec. 5.5): a real line whose writer the synthesis network should imitate.

A style is either one of sjvasquez's 13 shared priming lines (``3``), shipped inside the package
(``seqgen/assets/styles``), or any line of a seqgen handwriting dataset (``a01-000u-01``). Both come back as (offsets (T, 3) in the model's data
units, their text). The sjvasquez lines were preprocessed differently (y points up, slant
removed, steps scaled to a median length of 1), so they are flipped to y-down and rescaled so that
their step spread matches the training data's ``offset_std``.
"""

from __future__ import annotations

import numpy as np

from pathlib import Path

from seqgen.handwriting.iam import list_styles, load_style

class UnknownStyle(ValueError):
    """No such style: not a shipped style number, or not a line of the dataset."""


STYLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "styles"


def sjvasquez_dir() -> Path:
    return STYLES_DIR


def shipped_styles() -> list[int]:
    return list_styles(STYLES_DIR)


def from_sjvasquez(n: int, meta: dict) -> tuple[np.ndarray, str]:
    available = shipped_styles()
    if n not in available:
        raise UnknownStyle(f"no priming style {n}: the shipped styles are {available[0]}-{available[-1]}")
    offsets, text = load_style(sjvasquez_dir(), n)
    offsets = offsets.copy()
    offsets[:, 1] *= -1  # y up -> y down, as in IAM-OnDB
    scale = float(np.mean(meta["offset_std"])) / float(offsets[1:, :2].std())
    offsets[:, :2] *= scale
    return offsets, text


def from_dataset(storage, dataset: str, line_id: str) -> tuple[np.ndarray, str]:
    from seqgen.data.text import load_manifest
    from seqgen.handwriting.dataset import load_lines

    manifest = load_manifest(storage, dataset)
    for split in manifest["splits"]:
        for line in load_lines(storage, manifest, split):
            if line["line_id"] == line_id:
                return line["offsets"], line["text"]
    raise UnknownStyle(f"line {line_id!r} is not in handwriting dataset {dataset!r}")


def resolve_style(style: str, meta: dict, storage=None) -> tuple[np.ndarray, str]:
    """``"3"`` -> sjvasquez style 3; a line id -> that line of the model's training dataset.
    `UnknownStyle` naming the styles on offer (and never a server path) for anything else."""
    if style.isdigit():
        return from_sjvasquez(int(style), meta)
    styles = shipped_styles()
    offer = f"the shipped styles are {styles[0]}-{styles[-1]}"
    if storage is None:
        raise UnknownStyle(f"style {style!r} is not a shipped style number ({offer}), and no storage holding the "
                           f"model's dataset was given to look it up as a line id")
    try:
        return from_dataset(storage, meta["dataset"], style)
    except FileNotFoundError:  # the dataset is not on this storage: say so without saying where we looked
        raise UnknownStyle(f"style {style!r} is neither a shipped style ({offer}) nor a line id of dataset "
                           f"{meta['dataset']!r}, which is not on this server's storage") from None
    except UnknownStyle as e:
        raise UnknownStyle(f"{e}; {offer}") from None


def dataset_line_ids(storage, dataset: str) -> list[str]:
    """Every line id of a handwriting dataset (usable as a style), sorted."""
    from seqgen.data.text import load_manifest
    from seqgen.handwriting.dataset import load_lines

    manifest = load_manifest(storage, dataset)
    return sorted(line["line_id"] for split in manifest["splits"] for line in load_lines(storage, manifest, split))
