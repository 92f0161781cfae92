"""What several commands share: the storage, Ray address, --json and checkpoint options, bundled
config names, and the checks of option combinations."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from seqgen.storage import Storage

StorageOpt = typer.Option(None, "--storage", envvar="SEQGEN_STORAGE",
                          help="Storage root: a directory or an fsspec URL (s3://, gs://, memory://).")
AddressOpt = typer.Option(None, "--address", envvar="RAY_ADDRESS", help="Ray cluster address; default: a local Ray.")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")
CheckpointArg = typer.Argument(..., help="Checkpoint directory URL, run directory, or run name on storage.")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def config_path(config: Optional[str]) -> Optional[str]:
    """A YAML path, or the name of a bundled config (``seqgen/configs/<name>.yaml``)."""
    if config and not Path(config).exists() and (CONFIGS / f"{config}.yaml").exists():
        return str(CONFIGS / f"{config}.yaml")
    return config


def load_model(checkpoint: str, storage: Optional[str]):
    """(model, LoadedCheckpoint) for what the user typed, with the catalog's clear errors."""
    from seqgen.catalog import find_and_load_model

    return find_and_load_model(Storage.from_url(storage), checkpoint)


def require_kind(loaded, kind: str, needs: str) -> None:
    """A checkpoint of another model kind than a command needs: an error saying what to use."""
    if loaded.config.model.kind != kind:
        raise ValueError(f"checkpoint {loaded.url} is a {loaded.config.model.kind} model: {needs}")


def refuse(what: str, given: dict, why: str) -> None:
    """Options the user gave that ``what`` cannot honour: an error, not silence."""
    names = [name for name, value in given.items() if value is not None and value is not False]
    if names:
        raise ValueError(f"{what} cannot honour {', '.join(names)}: {why}")
