"""Launch a training run with Ray Train (TorchTrainer, Train V2) on the configured storage."""

from __future__ import annotations

from dataclasses import dataclass

from seqgen.config import ExperimentConfig, to_dict
from seqgen.runtime import ensure_ray
from seqgen.storage import Storage, join
from seqgen import checkpoint as ckpt


@dataclass
class TrainResult:
    run_url: str
    best_checkpoint: str
    latest_checkpoint: str
    metrics: dict


def ray_storage(storage: Storage, path: str | None = None):
    """(storage_path, storage_filesystem) for a Train or Tune RunConfig at ``path`` (default: the
    runs directory), on the same root as everything else."""
    path = storage.runs_dir() if path is None else path
    if storage.is_local or storage.url.split("://")[0] in ("s3", "gs", "gcs", "hdfs"):
        return storage.url_of(path), None  # Ray's own (pyarrow) file systems
    import pyarrow.fs

    return path, pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(storage.fs))


def run_config(cfg: ExperimentConfig, storage: Storage, callbacks=None):
    from ray.train import FailureConfig, RunConfig

    path, filesystem = ray_storage(storage)
    return RunConfig(
        name=cfg.run_name,
        storage_path=path,
        storage_filesystem=filesystem,
        failure_config=FailureConfig(max_failures=0),
        callbacks=callbacks,
    )


def make_trainer(cfg: ExperimentConfig, storage: Storage, callbacks=None):
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    from seqgen.train.loop import train_loop_per_worker

    t = cfg.train
    if t.num_workers > 0 and not storage.shared_across_processes:
        raise ValueError(f"storage {storage.url} lives in one process: use train.num_workers=0 with it")
    scaling = ScalingConfig(
        num_workers=t.num_workers,
        use_gpu=t.use_gpu,
        resources_per_worker=None if t.num_workers == 0 else ({"CPU": t.cpus_per_worker} if not t.use_gpu else None),
    )
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"experiment": to_dict(cfg), "storage": storage.url},
        scaling_config=scaling,
        run_config=run_config(cfg, storage, callbacks),
    )


def train(cfg: ExperimentConfig, storage: Storage, address: str | None = None) -> TrainResult:
    """Train (or resume) run ``cfg.run_name``; returns where its checkpoints are."""
    ensure_ray(address)
    run_dir = storage.run_dir(cfg.run_name)
    storage.write_json_atomic(join(run_dir, "config.json"), to_dict(cfg))
    result = make_trainer(cfg, storage).fit()
    run_url = storage.url_of(run_dir)
    checkpoints = ckpt.list_checkpoints(run_url)
    if not checkpoints:
        raise RuntimeError(f"run {cfg.run_name} finished without a checkpoint under {run_url}")
    return TrainResult(run_url, ckpt.best_checkpoint(run_url), checkpoints[-1], dict(result.metrics or {}))
