"""Model construction from a config + dataset metadata (loading a checkpoint: `seqgen.catalog.load_model`)."""

from __future__ import annotations

from torch import nn

from seqgen import kinds
from seqgen.config import ExperimentConfig


def build_model(cfg: ExperimentConfig, meta: dict) -> nn.Module:
    """The network a checkpoint's ``config.json`` + ``meta.json`` describe (its kind's builder)."""
    return kinds.resolve(kinds.get(cfg.model.kind).network)(cfg, meta)


def load_model(url: str, device: str = "cpu"):
    """Transitional name of `seqgen.catalog.load_model`, the one loader (with its errors).

    Kept only while callers outside the CLI and Serve still import it from here (tests of
    handwriting, tune, train and integration; benchmarks/bench_synthesis.py; docs/*.py); delete it
    with them. The import runs up a floor, which is why this must not stay."""
    from seqgen.catalog import load_model as load

    return load(url, device)
