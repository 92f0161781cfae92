"""Checkpoint directories ``<run>/checkpoint_<step>/``: everything needed to resume exactly, or to load a model for inference.

    config.json     the resolved ExperimentConfig
    meta.json       what the model's input/output mean (vocabulary, or alphabet + offset stats)
    model.pt        model state dict                        (torch.load(weights_only=True))
    trainer.pt      optimiser, LR schedule, regulariser (the same on every worker)
    worker-<r>.pt   worker r's own state: data cursor, carried RNN state, torch RNG states
    progress.json   step, loss history, evaluation history, best metric
    manifest.json   written last (atomically): format 2, the number of workers and every file's
                    size and sha256. A directory without it is not a checkpoint; a file whose size
                    or hash differs from it makes the checkpoint damaged.

Used by training, serving, tuning and the CLI; it imports torch only to read or write tensors, so
listing checkpoints stays cheap (`seqgen runs`, keep-best, a run's resume).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass

from fsspec.core import url_to_fs

from seqgen.config import ExperimentConfig, load_json, to_dict
from seqgen.storage import join, url_for, write_atomic

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
FORMAT = 2  # the manifest format seqgen writes, and the only one it reads


class CheckpointError(ValueError):
    """A checkpoint that is incomplete, damaged or unreadable; the message names it and the file."""


def _damaged(url: str, what: str) -> CheckpointError:
    """A damaged checkpoint's error: what is wrong with it, and what the user can do."""
    return CheckpointError(f"checkpoint {url} is damaged: {what} (name another checkpoint of its run, or run "
                           "`seqgen train` on the run to resume from its newest intact one)")


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
    if fs.exists(join(path, MANIFEST)):  # rewriting a step: it stops being a checkpoint meanwhile
        fs.rm(join(path, MANIFEST))
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
    for r in range(workers):  # read back what the other workers wrote: hashes them, proves it landed
        blobs[worker_file(r)] = fs.cat_file(join(path, worker_file(r)))
    files = {name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for name, data in blobs.items()}
    manifest = json.dumps({"format": FORMAT, "workers": workers, "files": files}, indent=2).encode()
    write_atomic(fs, join(path, MANIFEST), manifest)


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
    workers: int = 0  # training workers that wrote it (0: inference only, not resumable)


def read_manifest(url: str) -> dict:
    """The manifest of checkpoint ``url``: {format, workers, files: name -> {size, sha256}}."""
    fs, path = url_to_fs(url)
    try:
        manifest = json.loads(fs.cat_file(join(path, MANIFEST)))
    except FileNotFoundError:
        raise CheckpointError(f"not a complete checkpoint (no {MANIFEST}): {url}") from None
    except ValueError as e:
        raise _damaged(url, f"{MANIFEST} is unreadable ({e})") from None
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if fmt != FORMAT:
        raise CheckpointError(f"checkpoint {url} has a manifest of format {fmt!r}; this seqgen reads format "
                              f"{FORMAT} only (load it with the seqgen that wrote it, or retrain)")
    try:
        workers, files = int(manifest["workers"]), manifest["files"]
        if not all(isinstance(e["size"], int) and isinstance(e["sha256"], str) for e in files.values()):
            raise ValueError("a file without size or sha256")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise _damaged(url, f"{MANIFEST} is unreadable ({type(e).__name__}: {e})") from None
    return {"format": fmt, "workers": workers, "files": files}


def _read_verified(url: str, manifest: dict, name: str) -> bytes:
    """File ``name`` of checkpoint ``url``, checked against the manifest's size and sha256."""
    fs, path = url_to_fs(url)
    entry = manifest["files"].get(name)
    if entry is None:
        raise CheckpointError(f"checkpoint {url} has no {name} in its manifest")
    try:
        data = fs.cat_file(join(path, name))
    except FileNotFoundError:
        raise _damaged(url, f"{name} is missing") from None
    if len(data) != entry["size"]:
        raise _damaged(url, f"{name} has {len(data)} bytes, its manifest says {entry['size']}")
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise _damaged(url, f"{name} does not match its sha256 in the manifest")
    return data


def verify(url: str) -> dict:
    """Check every file of checkpoint ``url`` against its manifest; returns the manifest.

    Every worker of a resuming run checks the same files, so all of them agree on which
    checkpoint is usable."""
    manifest = read_manifest(url)
    for name in manifest["files"]:
        _read_verified(url, manifest, name)
    return manifest


def read_config(url: str) -> ExperimentConfig:
    """The config a checkpoint was trained with (reads config.json only)."""
    data = _read_verified(url, read_manifest(url), "config.json")
    try:
        return load_json(json.loads(data))
    except ValueError as e:
        raise _damaged(url, f"config.json is unreadable ({e})") from None


def load(url: str, with_trainer: bool = False, rank: int = 0) -> LoadedCheckpoint:
    """Load a checkpoint directory from any fsspec URL; tensors only, never pickled objects.

    Every file read is checked against the manifest's size and sha256 first (a ``CheckpointError``
    names the file and the checkpoint). ``with_trainer`` adds the optimiser state and worker
    ``rank``'s own state (``trainer_state`` keys: optimizer, schedule, regularizer, worker)."""
    import torch

    manifest = read_manifest(url)

    def read_json(name):
        data = _read_verified(url, manifest, name)
        try:
            return json.loads(data)
        except ValueError as e:
            raise _damaged(url, f"{name} is not JSON ({e})") from None

    def read_torch(name):
        data = _read_verified(url, manifest, name)
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
            raise _damaged(url, f"{name} cannot be read by torch.load ({str(e).splitlines()[0][:200]})") from None

    if with_trainer and worker_file(rank) not in manifest["files"]:
        raise CheckpointError(f"checkpoint {url} has no state for worker {rank} "
                              f"(written by {manifest['workers']} workers)")
    return LoadedCheckpoint(
        url=url,
        config=load_json(read_json("config.json")),
        meta=read_json("meta.json"),
        model_state=read_torch("model.pt"),
        progress=read_json("progress.json"),
        trainer_state={**read_torch("trainer.pt"), "worker": read_torch(worker_file(rank))} if with_trainer else None,
        workers=manifest["workers"],
    )


def load_latest(run_url: str, rank: int = 0) -> tuple[LoadedCheckpoint | None, list[str]]:
    """The newest usable checkpoint of a run with worker ``rank``'s state, for resuming, and the
    newer checkpoints skipped because they were damaged (each with a warning). ``trainer_state`` is
    None when the checkpoint has no state for ``rank`` (it was written by fewer workers).

    (None, []) for a run without checkpoints; a ``CheckpointError`` if every one is damaged, or if
    the newest intact one was saved for inference only."""
    found = list_checkpoints(run_url)
    damaged = []
    for url in reversed(found):
        try:
            manifest = verify(url)
            if manifest["workers"] == 0:  # intact, but nothing to resume from: not a reason to skip it
                break
            # a rank the checkpoint has no state for: the caller refuses the worker-count change
            return load(url, with_trainer=rank < manifest["workers"], rank=rank), damaged
        except CheckpointError as e:
            log.warning("%s; resuming from the checkpoint before it", e)
            damaged.append(url)
    else:
        if found:
            raise CheckpointError(f"every checkpoint under {run_url} is damaged (newest: {found[-1]}): "
                                  "remove them to start over, or choose a new run_name")
        return None, damaged
    raise CheckpointError(_inference_only(url))


def _inference_only(url: str) -> str:
    return (f"checkpoint {url} was saved for inference only (no optimiser or worker state): a run cannot "
            f"resume from it; start a new run_name with train.init_from={url}")


def resume_conflict(cfg: ExperimentConfig, saved: ExperimentConfig, workers: int, url: str) -> str | None:
    """Why run ``cfg`` cannot resume from checkpoint ``url`` (saved with config ``saved`` by
    ``workers`` workers), or None. The data cursor and carried state are per worker, each over its
    own share of the corpus, so they cannot be re-sharded onto another number of workers.

    Asked twice per resume: by the driver before it starts workers (`seqgen.train.run`), and by
    each worker of the checkpoint it actually loads (`seqgen.train.loop`)."""
    changed = sorted(k for k, v in to_dict(cfg.model).items() if to_dict(saved.model).get(k) != v)
    if changed:
        return (f"run {cfg.run_name!r} exists with other model settings ({', '.join(changed)}): "
                "resume it with the same model config, or choose a new run_name")
    if workers == 0:
        return f"run {cfg.run_name!r}: its latest {_inference_only(url)}"
    world = max(cfg.train.num_workers, 1)  # local mode (0) is one worker
    if workers != world:
        same = f"{workers}" if workers > 1 else "0 or 1"
        return (f"run {cfg.run_name!r}: checkpoint {url} was written by {workers} worker(s), but "
                f"train.num_workers={cfg.train.num_workers} now; resume with train.num_workers={same}, or "
                f"start a new run_name with train.init_from={url} (weights only)")
    return None


def discard(url: str) -> None:
    """Make a (damaged) checkpoint directory stop being a checkpoint: remove its manifest only, so
    its files stay for inspection and the next save of that step overwrites them."""
    fs, path = url_to_fs(url)
    try:
        fs.rm(join(path, MANIFEST))
    except FileNotFoundError:
        pass


def list_checkpoints(run_url: str) -> list[str]:
    """Complete checkpoints of a run, oldest first (names sort by step)."""
    fs, path = url_to_fs(run_url)
    if not fs.exists(path):
        return []
    found = [p for p in fs.ls(path, detail=False) if p.rstrip("/").rsplit("/", 1)[-1].startswith("checkpoint_")]
    found = [p for p in sorted(found) if fs.exists(join(p, MANIFEST))]
    return [url_for(fs, p) for p in found]


def best_checkpoint(run_url: str, metric: str = "score") -> str:
    """The kept checkpoint with the lowest ``metric``; the latest if none recorded it."""
    found = list_checkpoints(run_url)
    if not found:
        raise FileNotFoundError(f"no complete checkpoint under {run_url}: train the run first (`seqgen train`), "
                                "or name a checkpoint directory")

    return min(reversed(found), key=lambda url: _last_eval(url).get(metric, float("inf")))


def _last_eval(url: str) -> dict:
    fs, path = url_to_fs(url)
    with fs.open(join(path, "progress.json"), "rb") as f:
        evals = json.loads(f.read()).get("evals", [])
    return evals[-1] if evals else {}
