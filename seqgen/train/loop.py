"""The training loop every seqgen model runs: in Ray Train workers (``train_loop_per_worker``), or
in a Tune trial's own process (``train_loop``, reporting to Tune).

An explicit loop (no framework ``fit``): per step, sample the weights (weight noise), run the
task's loss, backprop (LSTM-derivative and output-derivative clipping happen inside backprop),
clip the global norm, step. Every ``eval_every`` steps: evaluate, write a complete checkpoint
under ``<storage>/runs/<run>/``, then hand the metrics to the caller's ``report`` (Ray Train's, or
Tune's). On start, the latest complete checkpoint of the run restores model, optimiser, schedule,
regulariser, data cursor, carried state, RNG and history: a re-run continues where it stopped,
with no lost or repeated step. Checkpoints: see ``seqgen.checkpoint``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable

import ray.train
import torch
from torch.utils._pytree import tree_map

from seqgen import kinds
from seqgen.config import ExperimentConfig, load_json
from seqgen.lease import check_holder, run_lease
from seqgen.models.widen import initial_weights
from seqgen.progress import Progress
from seqgen.storage import Storage, join
from seqgen import checkpoint as ckpt
from seqgen.train.curves import write_curves
from seqgen.train.optim import build_lr_schedule, build_optimizer
from seqgen.train.regularizers import Regularized, build_regularizer
from seqgen.train.task import TrainingTask

log = logging.getLogger(__name__)


def make_task(cfg: ExperimentConfig, storage: Storage, rank: int, world: int, device) -> TrainingTask:
    """The training task of the run's model kind (`seqgen.kinds`; the contract: `seqgen.train.task`)."""
    return kinds.resolve(kinds.get(cfg.model.kind).task)(cfg, storage, rank, world, device)


#: where each evaluation goes: ``report(metrics, checkpoint_url)``, the URL of the checkpoint just
#: written for it (None on the workers other than rank 0, which write only their own state)
Report = Callable[[dict, "str | None"], None]


def train_loop_per_worker(config: dict) -> None:
    """Ray Train's training function (``train.run.make_trainer``): this worker's place in the group
    and device come from Ray Train, and every evaluation goes to ``ray.train.report`` (and from
    there to Tune, when a Tune trial fits the trainer with ``TuneReportCallback``)."""
    cfg = load_json(config["experiment"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    gpu = cfg.train.use_gpu == "true"  # resolved from "auto" by train.run.resolve_gpu
    device = ray.train.torch.get_device() if (world > 1 or gpu) else torch.device("cpu")
    train_loop(cfg, Storage(config["storage"]), lambda metrics, checkpoint_url: ray.train.report(metrics),
               rank=rank, world=world, device=device, lease_holder=config.get("lease_holder"))


def train_loop(cfg: ExperimentConfig, storage: Storage, report: Report, rank: int = 0, world: int = 1,
               device: torch.device | None = None, lease_holder: str | None = None) -> None:
    """Train (or resume) run ``cfg.run_name`` as worker ``rank`` of ``world``, handing every
    evaluation to ``report`` once its checkpoint is complete on storage. One process on its own
    (world 1) is what a Tune trial trains in (``seqgen.tune.trial``), reporting to Tune. With
    ``lease_holder``, the run's lease must still be that holder's before every checkpoint."""
    device = torch.device("cpu") if device is None else device
    # bf16 autocast on GPU (train.precision; refused on CPU by train.run.resolve_gpu): the forward
    # pass and loss in bf16, weights, gradients and optimiser state in fp32, evaluation in fp32.
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16" and device.type == "cuda")
    torch.manual_seed(cfg.train.seed)  # same initial weights on every worker

    task = make_task(cfg, storage, rank, world, device)
    model = task.build_model().to(device)
    reg = build_regularizer(cfg.reg.kind, model, cfg.reg.std, task.num_train_examples).to(device)
    o = cfg.optim
    optimizer = build_optimizer(o.name, [*model.parameters(), *reg.parameters()], o.lr, o.momentum, o.weight_decay)
    schedule = build_lr_schedule(optimizer, o.lr_decay, o.lr_decay_every, o.lr_decay_after)
    progress = {"step": 0, "losses": [], "evals": [], "best": math.inf, "bad_evals": 0}

    run_url = storage.url_of(storage.run_dir(cfg.run_name))
    # The newest checkpoint that verifies (a damaged one is skipped with a warning): a re-run of the
    # command and a worker group restarted by Ray Train (train.max_failures) both come through here.
    loaded, damaged = ckpt.load_latest(run_url, rank)
    resume = loaded is not None
    if resume:
        why = ckpt.resume_conflict(cfg, loaded.config, loaded.workers, loaded.url)
        if why:
            raise ValueError(why)
        model.load_state_dict(loaded.model_state)
        st = tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, loaded.trainer_state)
        optimizer.load_state_dict(st["optimizer"])
        schedule.load_state_dict(st["schedule"])
        reg.load_state_dict(st["regularizer"])
        task.load_state_dict(st["worker"]["task"])
        _set_rng_state(loaded.trainer_state["worker"], device)  # this worker's own streams
        progress = loaded.progress
        progress.pop("stopped", None)  # a run resumed with a new budget is running again
    elif cfg.train.init_from:  # retraining with more regularisation (sec. 3.1), or a wider network
        model.load_state_dict(initial_weights(model, ckpt.load(cfg.train.init_from), cfg.train.seed))
    if not resume:  # per-worker dropout / weight-noise streams (a resumed run restores its RNG)
        torch.manual_seed(cfg.train.seed + 1000 * rank)
    # the step each attempt began at, saved with every checkpoint: [0] for a run never interrupted;
    # a worker group restarted by Ray Train or a re-run command appends the step it resumed from
    progress.setdefault("starts", []).append(progress["step"])
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # every worker has chosen its checkpoint before rank 0 discards damaged ones
    if rank == 0:
        for url in damaged:  # newer than the one resumed from: their steps are redone and rewritten
            ckpt.discard(url)

    # forward(*args): the model on a fresh weight sample per window (fixed / adaptive noise). DDP
    # wraps model and regulariser together, so AWN's sigma gradients are averaged like the weights'.
    forward = Regularized(model, reg)
    if world > 1:
        forward = data_parallel(forward, device)

    reporter = _Reporter(cfg, storage, run_url, rank, world, progress, report, lease_holder)
    start, t = time.time(), cfg.train
    since_eval = None  # the task's summed statistics since the last evaluation
    step_seconds = 0.0  # time in training steps since the last evaluation (excludes evals, I/O)
    model.train()
    while progress["step"] < t.max_steps:
        tick = time.perf_counter()
        batch = task.next_batch()
        with autocast:
            loss, stats = task.loss(forward, model, batch)
        total = loss + reg.penalty(model)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if o.grad_norm_clip > 0:
            torch.nn.utils.clip_grad_norm_([*model.parameters(), *reg.parameters()], o.grad_norm_clip)
        optimizer.step()
        schedule.step()
        step_seconds += time.perf_counter() - tick
        progress["step"] += 1
        progress["losses"].append(loss.item())  # the objective per step (nats per token / per line)
        since_eval = stats if since_eval is None else since_eval + stats
        reporter.tick(progress["step"])

        out_of_time = t.max_minutes and (time.time() - start) / 60 >= t.max_minutes
        if progress["step"] % t.eval_every == 0 or progress["step"] == t.max_steps or out_of_time:
            steps_done = progress["step"] - (progress["evals"][-1]["step"] if progress["evals"] else 0)
            metrics = {"step": progress["step"], "epoch": task.epoch, "lr": optimizer.param_groups[0]["lr"],
                       "steps_per_s": steps_done / max(step_seconds, 1e-9),
                       "train_loss": since_eval.metrics("train")["train_loss"], **reg.metrics(), **task.evaluate(model)}
            # keep-best and early stopping rank by the task's own measure (the validation loss, or e.g.
            # a recognizer's CER), else the training loss
            key = getattr(task, "score_metric", "valid_loss")
            metrics["score"] = metrics.get(key, metrics["train_loss"])
            metrics["wall_time"] = time.time()  # for TensorBoard's time axes
            since_eval, step_seconds = None, 0.0
            improved = metrics.get(key, -math.inf) < progress["best"]
            progress["best"] = min(progress["best"], metrics.get(key, math.inf))
            progress["bad_evals"] = 0 if improved else progress["bad_evals"] + 1
            progress["evals"].append(metrics)
            trainer_state = {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                             "regularizer": reg.state_dict()}
            worker_state = {"task": task.state_dict(), **_rng_state(device)}
            stopped = ("time limit" if out_of_time else
                       "early stopping" if t.patience and progress["bad_evals"] >= t.patience else None)
            if stopped:
                progress["stopped"] = stopped  # saved with the last checkpoint: why the run ended
            reporter.report(metrics, model, task.meta, trainer_state, worker_state)
            if stopped:
                break
    reporter.close()


def data_parallel(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` in DistributedDataParallel over the process group the workers' launcher set up
    (Ray Train's TorchTrainer, or any torch.distributed launcher: the loop needs no Ray for it),
    on a GPU bound to the worker's own device, as Ray Train's ``prepare_model`` wraps it."""
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        torch.cuda.set_device(device)
        return DistributedDataParallel(module, device_ids=[device], output_device=device)
    return DistributedDataParallel(module)


def _rng_state(device) -> dict:
    """This worker's random streams (dropout, weight noise): CPU, and CUDA when it runs there."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"rng": torch.get_rng_state(), "cuda_rng": cuda}


def _set_rng_state(worker: dict, device) -> None:
    torch.set_rng_state(worker["rng"])
    if worker.get("cuda_rng") is not None and device.type == "cuda":  # a GPU run resumed on a GPU
        torch.cuda.set_rng_state(worker["cuda_rng"], device)


class _Reporter:
    """Console progress, metrics.csv + curves.png beside the run, checkpoints on storage, then the
    metrics to ``report`` (Ray Train, or Tune)."""

    def __init__(self, cfg: ExperimentConfig, storage: Storage, run_url: str, rank: int, world: int, progress: dict,
                 report: Report, lease_holder: str | None = None):
        self.cfg, self.storage, self.run_url, self.progress, self.send = cfg, storage, run_url, progress, report
        self.rank, self.world = rank, world
        self.lease = run_lease(storage, cfg.run_name, holder=lease_holder) if lease_holder else None
        if self.lease:  # a restarted worker group of a run that lost its lease stops at once
            check_holder(self.lease.url, self.lease.holder, self.lease.what)
        # curves.png is drawn every half minute and at the end: a run shorter than that draws it once
        self.last_plot = time.time()
        # a bar on a terminal, a line every few seconds in logs; only rank 0 shows it
        self.bar = Progress(f"train {cfg.run_name}", cfg.train.max_steps, "steps", completed=progress["step"],
                            enabled=None if rank == 0 and cfg.train.progress else False)

    def tick(self, step: int) -> None:
        self.bar.update(step)

    def report(self, metrics: dict, model, meta: dict, trainer_state: dict, worker_state: dict) -> None:
        # seqgen persists its own checkpoints (Ray Train's local mode does not persist any), so
        # resume, keep-best and loading work the same with 0, 1 or N workers.
        url = join(self.run_url, ckpt.checkpoint_name(metrics["step"]))
        if self.lease:  # fencing: a run whose lease was taken over must not write over the new writer
            check_holder(self.lease.url, self.lease.holder, self.lease.what)
        ckpt.save_worker_state(url, self.rank, worker_state)  # each worker's own cursor, state, RNG
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()  # every worker file is written before rank 0 writes the manifest
        if self.rank != 0:
            self.send(metrics, None)
            return
        line = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
                         if k != "wall_time")
        self.bar.print(f"[{self.cfg.run_name}] {line}")
        plot = time.time() - self.last_plot > 30
        write_curves(self.storage, self.cfg.run_name, self.progress["evals"], plot)
        self.last_plot = time.time() if plot else self.last_plot
        ckpt.save(url, self.cfg, meta, model.state_dict(), trainer_state, self.progress, self.world)
        ckpt.prune(self.run_url, self.cfg.train.keep_checkpoints)
        self.send(metrics, url)  # after the checkpoint is complete: a Tune trial may hand it on

    def close(self) -> None:
        if self.rank == 0:
            write_curves(self.storage, self.cfg.run_name, self.progress["evals"])
        self.bar.close()
