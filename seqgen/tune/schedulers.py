"""The Tune schedulers a search runs under, with ``time_attr="training_iteration"`` = the trial's
evaluations so far (each evaluation is one report):

* ``asha``: stops poor trials after ``grace_period`` evaluations.
* ``pbt`` (trials that train in their own process only, ``train.num_workers=0``, at least two at a
  time): every ``grace_period`` evaluations a trial among the worst continues from a copy of a
  better trial's latest checkpoint with perturbed hyperparameters (``seqgen.tune.trial``).
  Synchronous PBT: it acts once every running trial has reported that evaluation, pausing the
  others meanwhile (a trial's report waits until Tune lets it go on, so none trains past it), and
  then pauses them all; a paused trial goes on in its own run from its own checkpoint. So which
  trial continues from which depends on the trials' metrics only, never on which trains faster
  (asynchronous PBT compares each report with whatever the others last reported: its outcome
  follows their speeds, and a fast trial may finish before a slow one is compared with it).
* ``fifo`` (not a user's choice): every trial to its end (the staged search's stage 1).
"""

from __future__ import annotations

import math

from seqgen.config import ConfigError, ExperimentConfig
from seqgen.tune.space import mutations

SCHEDULERS = ("asha", "pbt")


def make_scheduler(kind: str, base: ExperimentConfig, space: dict, grace_period: int):
    """Tune's scheduler ``kind`` for trials of ``base`` over ``space`` (None: Tune's FIFO)."""
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

    evals = max(1, math.ceil(base.train.max_steps / max(base.train.eval_every, 1)))
    if kind == "fifo":
        return None
    if kind == "asha":
        # max_t one past the last evaluation: a trial that runs to the end finishes by itself rather
        # than being stopped (killed) by ASHA at max_t, so Ray Train shuts its workers down cleanly.
        return ASHAScheduler(time_attr="training_iteration", max_t=evals + 1, grace_period=min(grace_period, evals))
    return PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=min(grace_period, evals),
                                   hyperparam_mutations=mutations(space), synch=True)


def check_scheduler(kind: str, base: ExperimentConfig, space: dict, max_concurrent: int) -> None:
    """What ``kind`` needs of the trials, checked before any trial starts (a staged search checks
    stage 2's before stage 1 trains)."""
    if kind != "pbt":
        return
    if base.train.num_workers > 0:
        raise ConfigError("--scheduler pbt runs trials that train in their own process (train.num_workers=0): "
                          "its trials restart from copies of each other's checkpoints; use asha with Ray Train "
                          "workers")
    if not mutations(space):
        raise ConfigError("--scheduler pbt needs a search space with something to perturb")
    if max_concurrent < 2:  # Tune starts a trial only when another ends: PBT would never compare two
        raise ConfigError("--scheduler pbt needs --max-concurrent 2 or more: its trials continue from the "
                          "checkpoints of better trials running beside them")
