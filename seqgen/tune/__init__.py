"""Hyperparameter search with Ray Tune over seqgen training runs (Graves 2013 regularisation).

    space.py    ``key=kind:args`` specs -> Tune domains, checked against the config; default spaces
    search.py   the per-trial driver (a Tune function trainable running seqgen's Ray Train
                trainer) and ``run_search``: one search under ASHA or PBT
    staged.py   ``run_staged``: stage 1 trains without regularisation to early stopping, stage 2
                retrains copies of its best checkpoint with each regulariser (sec. 3)
    report.py   results.csv / results.md, every trial's validation curve (curves.png) and a copy
                of the best checkpoint under ``<root>/tune/<search>/``

Trial runs are ordinary seqgen runs under ``<root>/runs/``; ``best/`` is a complete checkpoint, so
``seqgen sample <root>/tune/<search>/best`` works after the trial runs are gone.
"""

from seqgen.tune.search import SCHEDULERS, SearchResult, run_search, trial_run_name
from seqgen.tune.space import (
    REG_SETTINGS, SPACE_KINDS, apply_params, check_space, default_space, parse_space, settings_space,
)
from seqgen.tune.staged import run_staged

__all__ = ["REG_SETTINGS", "SCHEDULERS", "SPACE_KINDS", "SearchResult", "apply_params", "check_space",
           "default_space", "parse_space", "run_search", "run_staged", "settings_space", "trial_run_name"]
