"""Checkpoint directories ``<run>/checkpoint_<step>/``: everything needed to resume exactly, or to load a model for inference.

    config.json     the resolved ExperimentConfig
    meta.json       what the model's input/output mean (vocabulary, or alphabet + offset stats)
    model.pt        model state dict                        (torch.load(weights_only=True))
    trainer.pt      optimiser, LR schedule, regulariser (the same on every worker)
    worker-<r>.pt   worker r's own state: data cursor, carried RNN state, torch RNG state
    progress.json   step, loss history, evaluation history, best metric
    manifest.json   file list with sizes, written last: a directory without it is not a checkpoint
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

from fsspec.core import url_to_fs

from seqgen.config import ExperimentConfig, load_json, to_dict
from seqgen.storage import join

def worker_file(rank: int) -> str:
    return f"worker-{rank}.pt"


def save_worker_state(url: str, rank: int, state: dict) -> None:
    """Every worker writes its own state file first; ``save`` (rank 0, after a barrier) then
    writes the rest and the manifest that lists them all."""
    fs, path = url_to_fs(url)
    fs.makedirs(path, exist_ok=True)
    with fs.open(join(path, worker_file(rank)), "wb") as f:
        f.write(_torch_bytes(state))


def save(url: str, cfg: ExperimentConfig, meta: dict, model_state: dict, trainer_state: dict, progress: dict,
         workers: int = 0) -> None:
    """Write a checkpoint directory at ``url`` (any fsspec URL), the manifest last.

    The ``workers`` per-worker files must already be there (``save_worker_state``; 0 for a
    checkpoint made for inference only, which cannot be resumed). A run killed
    mid-write leaves a directory without a manifest, which no reader accepts and the next save of
    the same step overwrites.
    """
    fs, path = url_to_fs(url)
    fs.makedirs(path, exist_ok=True)
    blobs = {
        "config.json": json.dumps(to_dict(cfg), indent=2).encode(),
        "meta.json": json.dumps(meta, indent=2).encode(),
        "model.pt": _torch_bytes(model_state),
        "trainer.pt": _torch_bytes(trainer_state),
        "progress.json": json.dumps(progress).encode(),
    }
    for name, data in blobs.items():
        with fs.open(join(path, name), "wb") as f:
            f.write(data)
    sizes = {name: len(data) for name, data in blobs.items()}
    sizes |= {worker_file(r): fs.size(join(path, worker_file(r))) for r in range(workers)}
    manifest = {"format": 1, "files": sizes}
    with fs.open(join(path, "manifest.json"), "wb") as f:
        f.write(json.dumps(manifest, indent=2).encode())


def _torch_bytes(obj) -> bytes:
    import torch  # imported here: listing checkpoints (the Tune driver) must not pay for torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def checkpoint_name(step: int) -> str:
    return f"checkpoint_{step:08d}"


def prune(run_url: str, keep_best: int, metric: str = "score") -> None:
    """Delete checkpoints that are neither the latest nor among the ``keep_best`` best."""
    found = list_checkpoints(run_url)
    ranked = sorted(found[:-1], key=lambda u: _last_eval(u).get(metric, float("inf")))
    fs = url_to_fs(run_url)[0]
    for url in ranked[keep_best:]:
        fs.rm(url_to_fs(url)[1], recursive=True)


@dataclass
class LoadedCheckpoint:
    url: str
    config: ExperimentConfig
    meta: dict
    model_state: dict
    progress: dict
    trainer_state: dict | None = None


def load(url: str, with_trainer: bool = False, rank: int = 0) -> LoadedCheckpoint:
    """Load a checkpoint directory from any fsspec URL; tensors only, never pickled objects.

    ``with_trainer`` adds the optimiser state and worker ``rank``'s own state (``trainer_state``
    keys: optimizer, schedule, regularizer, worker)."""
    fs, path = url_to_fs(url)
    manifest_path = join(path, "manifest.json")
    if not fs.exists(manifest_path):
        raise FileNotFoundError(f"not a complete checkpoint (no manifest.json): {url}")
    with fs.open(manifest_path, "rb") as f:
        manifest = json.loads(f.read())
    for name, size in manifest["files"].items():
        if not fs.exists(join(path, name)) or fs.size(join(path, name)) != size:
            raise ValueError(f"checkpoint {url} is damaged: {name} is missing or has the wrong size")

    def read_json(name):
        with fs.open(join(path, name), "rb") as f:
            return json.loads(f.read())

    def read_torch(name):
        import torch

        with fs.open(join(path, name), "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)

    return LoadedCheckpoint(
        url=url,
        config=load_json(read_json("config.json")),
        meta=read_json("meta.json"),
        model_state=read_torch("model.pt"),
        progress=read_json("progress.json"),
        trainer_state={**read_torch("trainer.pt"), "worker": read_torch(worker_file(rank))} if with_trainer else None,
    )


def list_checkpoints(run_url: str) -> list[str]:
    """Complete checkpoints of a run, oldest first (names sort by step)."""
    fs, path = url_to_fs(run_url)
    if not fs.exists(path):
        return []
    found = [p for p in fs.ls(path, detail=False) if p.rstrip("/").rsplit("/", 1)[-1].startswith("checkpoint_")]
    found = [p for p in sorted(found) if fs.exists(join(p, "manifest.json"))]
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return [p if protocol in ("file", "local") else f"{protocol}://{p.lstrip('/')}" for p in found]


def best_checkpoint(run_url: str, metric: str = "score") -> str:
    """The kept checkpoint with the lowest ``metric``; the latest if none recorded it."""
    found = list_checkpoints(run_url)
    if not found:
        raise FileNotFoundError(f"no complete checkpoint under {run_url}")

    return min(reversed(found), key=lambda url: _last_eval(url).get(metric, float("inf")))


def _last_eval(url: str) -> dict:
    fs, path = url_to_fs(url)
    with fs.open(join(path, "progress.json"), "rb") as f:
        evals = json.loads(f.read()).get("evals", [])
    return evals[-1] if evals else {}


def resolve(storage, ref: str) -> str:
    """A checkpoint URL from what a user typed: a checkpoint directory, a run directory (its best
    checkpoint) or a run name on ``storage``."""
    if "/" not in ref and "://" not in ref:
        return best_checkpoint(storage.url_of(storage.run_dir(ref)))
    fs, path = url_to_fs(ref)
    if fs.exists(join(path, "manifest.json")):
        return ref
    return best_checkpoint(ref)
