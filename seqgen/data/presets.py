"""Named datasets: the bundled Tiny Shakespeare and the corpora in the shared data directory
(PTB; enwik8 for the Hutter preset, when it is there).

A preset is a set of `TextSpec` settings plus where its files live. The settings are also CLI
options of ``seqgen preprocess``, so the same dataset (same fingerprint) can be built from any copy
of the files: ``--data-dir s3://bucket/data`` moves the whole preset, ``-i/--valid/--test`` replace its
files, and each setting given on the command line overrides the preset's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from seqgen.data.text import TextSpec
from seqgen.storage import join

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


def data_root(what: str, override: str | None = None) -> str:
    """The data directory as a path or fsspec URL: ``override``, else ``$SEQGEN_DATA_DIR`` when it is a
    URL, else the local `data_dir`."""
    if override:
        return str(override).rstrip("/")
    env = os.environ.get("SEQGEN_DATA_DIR", "")
    return env.rstrip("/") if "://" in env else str(require_data_dir(what))


@dataclass(frozen=True)
class TextPreset:
    settings: dict  # TextSpec fields
    files: dict[str, list[str]] = field(default_factory=dict)  # split -> paths relative to the data dir
    bundled: dict[str, list[str]] = field(default_factory=dict)  # split -> files shipped with seqgen


def _ptb(prefix: str) -> dict[str, list[str]]:
    return {s: [f"text/ptb/{prefix}.{s}.txt"] for s in ("train", "valid", "test")}


PRESETS = {
    # char-rnn's corpus; validation = the last 10% of the file
    "shakespeare": TextPreset({"tokenizer": "char", "valid_fraction": 0.1}, bundled={"train": [BUNDLED_SHAKESPEARE]}),
    # 10k words incl. <eos> (Mikolov's simple-examples)
    "ptb-word": TextPreset({"tokenizer": "word", "max_vocab": 10000}, _ptb("ptb")),
    # space-separated symbols, '_' between words: 50 symbols with <eos>; one token = one character
    "ptb-char": TextPreset({"tokenizer": "word", "tokens_are_chars": True}, _ptb("ptb.char")),
    # Hutter Prize Wikipedia (enwik8, sec. 3.2): raw bytes, all 256 values as symbols, one file cut
    # 90 / 5 / 5 into train / valid / test (Graves trained on the first 96M bytes and validated on
    # the last 4M; 90/5/5 is the split later enwik8 results use, and it keeps a test set). Any byte
    # file or fsspec URL: `seqgen preprocess NAME --preset hutter -i s3://bucket/enwik8`.
    "hutter": TextPreset({"tokenizer": "byte", "valid_fraction": 0.05, "test_fraction": 0.05}, {"train": ["text/enwik8"]}),
}
TEXT_PRESETS = tuple(PRESETS)
SETTINGS = tuple(f.name for f in fields(TextSpec) if f.name != "files")


def text_preset(name: str, data_dir: str | None = None) -> TextSpec:
    """Preset ``name`` with its files (under ``data_dir``, a path or URL, default: the data directory)."""
    preset = PRESETS[name]
    files = dict(preset.bundled)
    if preset.files:
        root = data_root(f"preset {name}", data_dir)
        files |= {split: [join(root, p) for p in paths] for split, paths in preset.files.items()}
    return TextSpec(files=files, **preset.settings)


def text_spec(name: str, inputs=(), valid=(), test=(), preset: str | None = None, data_dir: str | None = None,
              **settings) -> TextSpec:
    """What ``seqgen preprocess NAME`` builds.

    The settings start from the preset (``preset``, else ``name`` when it names one, else the
    `TextSpec` defaults); each of ``settings`` that is not None overrides one. The files are
    ``inputs`` (train) / ``valid`` / ``test`` when inputs are given, else the preset's.
    """
    if unknown := set(settings) - set(SETTINGS):
        raise TypeError(f"unknown TextSpec settings {sorted(unknown)}")
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (valid: {', '.join(TEXT_PRESETS)})")
    preset = preset or (name if name in PRESETS else None)
    if not inputs and not preset:
        raise ValueError(f"no --input given and {name!r} is not a preset ({', '.join(TEXT_PRESETS)})")
    if inputs:
        files = {"train": list(inputs), **({"valid": list(valid)} if valid else {}), **({"test": list(test)} if test else {})}
    else:
        if valid or test:
            raise ValueError("--valid / --test replace a preset's files only together with --input")
        files = text_preset(preset, data_dir).files
    base = PRESETS[preset].settings if preset else {}
    return TextSpec(files=files, **(base | {k: v for k, v in settings.items() if v is not None}))
