"""Model construction from a config + dataset metadata (loading a checkpoint: `seqgen.catalog.load_model`)."""

from __future__ import annotations

from torch import nn

from seqgen import kinds
from seqgen.config import ExperimentConfig


def build_model(cfg: ExperimentConfig, meta: dict) -> nn.Module:
    """The network a checkpoint's ``config.json`` + ``meta.json`` describe (its kind's builder)."""
    return kinds.resolve(kinds.get(cfg.model.kind).network)(cfg, meta)
