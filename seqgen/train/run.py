"""Launch a training run with Ray Train (TorchTrainer, Train V2) on the configured storage.

Failures: ``train.max_failures`` goes to Ray Train's ``FailureConfig``. When a worker process or
its node dies, Ray Train tears the worker group down and starts a new one, whose training function
resumes from the run's latest complete checkpoint on storage (``seqgen.train.loop``): seqgen keeps
its own checkpoints rather than reporting them to Ray (Ray's local mode persists none), so the
same resume path serves a restart, a re-run of the command and local mode.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from seqgen import checkpoint as ckpt
from seqgen.checkpoint import resume_conflict
from seqgen.config import ConfigError, ExperimentConfig, to_dict
from seqgen.data.text import load_manifest
from seqgen.lease import run_lease
from seqgen.runtime import ensure_ray
from seqgen.storage import Storage, join


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
        failure_config=FailureConfig(max_failures=cfg.train.max_failures),
        callbacks=callbacks,
    )


def make_trainer(cfg: ExperimentConfig, storage: Storage, callbacks=None, lease_holder: str | None = None):
    """A TorchTrainer for run ``cfg.run_name``. With ``lease_holder`` (the holder of the run's lease,
    ``seqgen.lease``), the workers check that it still holds the lease before every checkpoint."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    from seqgen.train.loop import train_loop_per_worker

    t = cfg.train
    if t.num_workers > 0 and not storage.shared_across_processes:
        raise ValueError(f"storage {storage.url} lives in one process: use train.num_workers=0 with it")
    cfg = with_gpu_resolved(cfg)  # workers get the answer
    gpu = cfg.train.use_gpu == "true"
    check_resumable(cfg, storage)  # before starting workers: a config error must not be retried
    scaling = ScalingConfig(
        num_workers=t.num_workers,
        use_gpu=gpu,
        resources_per_worker=None if t.num_workers == 0 else ({"CPU": t.cpus_per_worker} if not gpu else None),
    )
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"experiment": to_dict(cfg), "storage": storage.url, "lease_holder": lease_holder},
        scaling_config=scaling,
        run_config=run_config(cfg, storage, callbacks),
    )


def resolve_gpu(cfg: ExperimentConfig) -> bool:
    """``train.use_gpu``: true, false, or auto = whether the connected Ray cluster has GPUs. The one
    place that answers "auto" (training runs, and the resources a Tune trial asks for)."""
    if cfg.train.use_gpu == "auto":
        import ray

        return ray.cluster_resources().get("GPU", 0) > 0
    return cfg.train.use_gpu == "true"


def with_gpu_resolved(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with ``train.use_gpu`` answered ("true" / "false": whoever trains it reads the answer,
    not "auto"); bf16 without a GPU is refused."""
    gpu = resolve_gpu(cfg)
    if cfg.train.precision == "bf16" and not gpu:
        raise ConfigError("train.precision=bf16 needs a GPU (bf16 autocast on CPU is slow and not what was "
                          f"asked for): this run has none (train.use_gpu={cfg.train.use_gpu}); use train.precision=fp32")
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, use_gpu=str(gpu).lower()))


def check_resumable(cfg: ExperimentConfig, storage: Storage) -> None:
    """Refuse early (in the driver, reading two small files) a re-run that its latest checkpoint
    cannot continue; the training loop checks the checkpoint it actually resumes from again."""
    found = ckpt.list_checkpoints(storage.url_of(storage.run_dir(cfg.run_name)))
    if not found:
        return
    try:
        manifest = ckpt.read_manifest(found[-1])
        saved = ckpt.read_config(found[-1])
    except (ckpt.CheckpointError, ConfigError):
        return  # damaged: the loop falls back to an older checkpoint and checks that one
    why = resume_conflict(cfg, saved, manifest["workers"], found[-1])
    if why:
        raise ValueError(why)


def train(cfg: ExperimentConfig, storage: Storage, address: str | None = None) -> TrainResult:
    """Train (or resume) run ``cfg.run_name``; returns where its checkpoints are."""
    run_dir = storage.run_dir(cfg.run_name)
    # One writer per run name: a second `seqgen train` of the same run fails here at once, before
    # it starts (or joins) a Ray it would not use; so does a run of a dataset that is not there
    # (which the workers would find only once Ray Train had started them).
    with run_lease(storage, cfg.run_name) as lease:
        load_manifest(storage, cfg.dataset)
        ensure_ray(address)
        storage.write_json_atomic(join(run_dir, "config.json"), to_dict(cfg))
        result = make_trainer(cfg, storage, lease_holder=lease.holder).fit()
    run_url = storage.url_of(run_dir)
    checkpoints = ckpt.list_checkpoints(run_url)
    if not checkpoints:
        raise RuntimeError(f"run {cfg.run_name} finished without a checkpoint under {run_url}")
    return TrainResult(run_url, ckpt.best_checkpoint(run_url), checkpoints[-1], dict(result.metrics or {}))
