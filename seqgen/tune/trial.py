"""One Tune trial: a function trainable that trains one seqgen run with the trial's values.

A trial's run is ``<prefix>-trial-<NNN>`` on the search's storage root (``seqgen.tune.naming``),
an ordinary run with its checkpoints, ``metrics.csv`` and curves. How it trains:

* ``train.num_workers == 0`` (one CPU box, the default): in the trial's own process, with the CPUs
  (and GPU) the trial reserved: ``train.loop.train_loop`` as a world of one, whose ``report`` is
  ``tune.report``. Not through a TorchTrainer: Ray Train's local mode refuses to run inside a Tune
  trial (``ray.train.report`` and ``get_context`` raise there). A function trainable's
  ``tune.report`` returns only once Tune has processed the result and let the trial go on, so a
  scheduler acts at every evaluation, however fast training is.
* ``train.num_workers > 0`` (clusters): Tune cannot take a TorchTrainer directly in Ray Train V2,
  so the trial (0.01 CPU) fits ``make_trainer(cfg, storage, callbacks=[TuneReportCallback()])``;
  Ray Train's workers do the work and every evaluation reaches Tune through the callback. When
  ASHA stops such a trial, Ray Train's placement-group cleaner frees the workers' CPUs; it needs
  the Ray state API (``seqgen.tune.search`` warns without it).

Under PBT (trials in their own process only) every report carries a copy of the evaluation's
checkpoint as its Tune checkpoint, with ``segment.json``: whose it is and the trial's steps so far.
A trial that PBT restarts from another trial's checkpoint (``tune.get_checkpoint()``) begins a new
*segment* run ``<trial>-r<k>`` initialised (``train.init_from``) from that copy, with a fresh
optimiser and the trial's remaining step budget, and records its offset in ``segment.json``, so
the trial's history lays the segments end to end (``report.trial_history``); a copy taken at the
last step leaves nothing to train, and that trial ends at once. A trial restarted from its own
checkpoint (PBT paused it so that others could catch up, or its process died) goes on in its
latest run from that run's own checkpoint on storage, optimiser and data cursor included.
"""

from __future__ import annotations

import json
import tempfile

from seqgen.config import ExperimentConfig, from_dict, to_dict, with_values
from seqgen.storage import Storage, join
from seqgen.tune.naming import trial_run_name, trial_runs
from seqgen.tune.report import SEGMENT_FILE, copy_checkpoint
from seqgen.tune.space import apply_params

PBT_INIT = "pbt-init"  # in a segment's run dir: the copy of the checkpoint it starts from


def trial_resources(base: ExperimentConfig) -> dict:
    """What a trial reserves (``tune.with_resources``); ``base.train.use_gpu`` already answered."""
    if base.train.num_workers > 0:  # the TorchTrainer schedules its own controller and workers
        return {"cpu": 0.01}
    return {"cpu": _cpus_on_one_node(base.train.cpus_per_worker), "gpu": int(base.train.use_gpu == "true")}


def run_trial(params: dict, base: dict, storage_url: str, prefix: str, pbt: bool) -> None:
    """The function trainable: train the trial's run (or its next PBT segment) with ``params``."""
    from ray import tune

    storage = Storage(storage_url)
    trial_id = tune.get_context().get_trial_id()
    cfg = apply_params(from_dict(ExperimentConfig, base), params)
    cfg.run_name, offset = trial_run_name(prefix, trial_id), 0
    restored = tune.get_checkpoint()
    if restored is not None:  # PBT restarted the trial (or its process died): go on from that checkpoint
        cfg, offset = _continue(cfg, storage, prefix, trial_id, restored)
        if cfg is None:
            return  # a copy of a finished trial's last checkpoint: nothing is left to train
    storage.write_json_atomic(join(storage.run_dir(cfg.run_name), "config.json"), to_dict(cfg))
    if cfg.train.num_workers > 0:
        from ray.tune.integration.ray_train import TuneReportCallback

        from seqgen.train.run import make_trainer

        make_trainer(cfg, storage, callbacks=[TuneReportCallback()]).fit()
        return
    import torch

    from seqgen.train.loop import train_loop

    device = torch.device("cuda") if cfg.train.use_gpu == "true" else torch.device("cpu")
    train_loop(cfg, storage, TuneReport(trial_id, offset, with_checkpoints=pbt), device=device)


def _continue(cfg: ExperimentConfig, storage: Storage, prefix: str, trial_id: str, restored):
    """(the config of the run the trial goes on in, that run's offset) from the Tune checkpoint
    the trial was restarted with; (None, offset) when that checkpoint is at the trial's last step.

    The trial's own checkpoint (PBT paused the trial to let others catch up, or its process died):
    its latest run goes on from its own latest checkpoint on storage, optimiser and data cursor
    included. Another trial's (PBT exploited it): a new segment run starts from a copy of it."""
    runs = trial_runs(storage, prefix, trial_id)
    with restored.as_directory() as d:
        with open(join(d, SEGMENT_FILE)) as f:
            saved = json.load(f)
        if saved.get("trial_id") == trial_id:
            return _segment(cfg, storage, runs[-1])
        if saved["offset"] >= cfg.train.max_steps:
            return None, saved["offset"]
        run = trial_run_name(prefix, trial_id, len(runs))
        copy_checkpoint(d, storage.url_of(join(storage.run_dir(run), PBT_INIT)))
    storage.write_json_atomic(join(storage.run_dir(run), SEGMENT_FILE), {"offset": saved["offset"]})
    return _segment(cfg, storage, run)


def _segment(cfg: ExperimentConfig, storage: Storage, run: str):
    """(the trial's config for its segment run ``run``, the segment's offset): a segment after the
    first starts from the weights copied into it, with the trial's remaining step budget."""
    path = join(storage.run_dir(run), SEGMENT_FILE)
    offset = storage.read_json(path)["offset"] if storage.exists(path) else 0
    if offset:
        cfg = with_values(cfg, {"train.init_from": storage.url_of(join(storage.run_dir(run), PBT_INIT)),
                                "train.max_steps": cfg.train.max_steps - offset})
    cfg.run_name = run
    return cfg, offset


class TuneReport:
    """The training loop's ``report`` in a trial that trains in its own process: each evaluation
    to ``tune.report``, with ``trial_step`` (steps since the trial began, its earlier segments
    included) and, ``with_checkpoints`` (PBT), a copy of its checkpoint for Tune to hand on, whose
    ``segment.json`` says whose it is and at which of its trial's steps."""

    def __init__(self, trial_id: str, offset: int, with_checkpoints: bool):
        self.trial_id, self.offset, self.with_checkpoints = trial_id, offset, with_checkpoints

    def __call__(self, metrics: dict, checkpoint_url: str | None) -> None:
        from ray import tune

        metrics = {**metrics, "trial_step": self.offset + int(metrics["step"])}
        if not self.with_checkpoints:
            tune.report(metrics)
            return
        # Tune persists the directory into the experiment's storage during the call
        with tempfile.TemporaryDirectory(prefix="seqgen-pbt-") as d:
            copy_checkpoint(checkpoint_url, d)
            with open(join(d, SEGMENT_FILE), "w") as f:
                json.dump({"offset": metrics["trial_step"], "trial_id": self.trial_id}, f)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def _cpus_on_one_node(wanted: int) -> int:
    """``wanted`` CPUs, at most what the biggest node has (a bigger request would never start)."""
    import ray

    per_node = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    return int(max(1, min(wanted, max(per_node, default=1))))
