"""Named datasets: the bundled Tiny Shakespeare and the corpora in the shared data directory."""

from __future__ import annotations

import os
from pathlib import Path

from seqgen.data.text import TextSpec

BUNDLED_SHAKESPEARE = str(Path(__file__).resolve().parents[1] / "assets" / "tinyshakespeare.txt")


def data_dir() -> Path | None:
    """``$SEQGEN_DATA_DIR``, else ``../shared/data`` beside the working directory or the repo."""
    if os.environ.get("SEQGEN_DATA_DIR"):
        return Path(os.environ["SEQGEN_DATA_DIR"])
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


def require_data_dir(what: str) -> Path:
    d = data_dir()
    if d is None or not d.is_dir():
        raise FileNotFoundError(f"{what} needs the data directory: set SEQGEN_DATA_DIR (not found: {d})")
    return d


def _ptb(prefix: str) -> dict[str, list[str]]:
    root = require_data_dir("PTB") / "text" / "ptb"
    return {s: [str(root / f"{prefix}.{s}.txt")] for s in ("train", "valid", "test")}


def text_preset(name: str) -> TextSpec:
    if name == "shakespeare":  # char-rnn's corpus; validation = the last 10% of the file
        return TextSpec("char", {"train": [BUNDLED_SHAKESPEARE]}, valid_fraction=0.1)
    if name == "ptb-word":  # 10k words incl. <eos> (Mikolov's simple-examples)
        return TextSpec("word", _ptb("ptb"), max_vocab=10000)
    if name == "ptb-char":  # space-separated symbols, '_' between words: 50 symbols with <eos>
        return TextSpec("word", _ptb("ptb.char"), tokens_are_chars=True)
    raise KeyError(name)


TEXT_PRESETS = ("shakespeare", "ptb-word", "ptb-char")
