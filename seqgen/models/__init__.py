"""Model construction from a config + dataset metadata, and loading from checkpoints."""

from __future__ import annotations

from torch import nn

from seqgen import kinds
from seqgen.config import ExperimentConfig


def build_model(cfg: ExperimentConfig, meta: dict) -> nn.Module:
    """The network a checkpoint's ``config.json`` + ``meta.json`` describe (its kind's builder)."""
    return kinds.resolve(kinds.get(cfg.model.kind).network)(cfg, meta)


def load_model(url: str, device: str = "cpu"):
    """(model in eval mode, LoadedCheckpoint) for a checkpoint directory URL."""
    from seqgen import checkpoint

    loaded = checkpoint.load(url)
    model = build_model(loaded.config, loaded.meta)
    model.load_state_dict(loaded.model_state)
    return model.to(device).eval(), loaded
