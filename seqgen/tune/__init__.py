"""Hyperparameter search with Ray Tune over seqgen training runs (Graves 2013 regularisation).

    space.py       ``key=kind:args`` specs -> Tune domains, checked against the config; default spaces
    request.py     what a search request must satisfy before anything starts
    naming.py      trial run names (``<search>-trial-<NNN>``, ``-r<k>`` for a PBT segment)
    schedulers.py  ASHA and PBT, and what each needs of the trials
    trial.py       one trial: a Tune function trainable that trains one seqgen run and reports
                   each evaluation to Tune (PBT's checkpoint exchange included)
    search.py      ``run_search``: one search; ``fit_trials``: the Tuner behind every search
    staged.py      ``run_staged``: stage 1 trains without regularisation to early stopping, stage 2
                   retrains copies of its best checkpoint with each regulariser (sec. 3)
    results.py     a finished search's rows and best trial
    report.py      results.csv / results.md, every trial's validation curve (curves.png), trial
                   histories over PBT segments, checkpoint copies

Trial runs are ordinary seqgen runs under ``<root>/runs/``; ``best/`` is a complete checkpoint, so
``seqgen sample <root>/tune/<search>/best`` works after the trial runs are gone.
"""

from seqgen.tune.naming import trial_run_name
from seqgen.tune.results import SearchResult
from seqgen.tune.schedulers import SCHEDULERS
from seqgen.tune.search import run_search
from seqgen.tune.space import (
    REG_SETTINGS, SPACE_KINDS, apply_params, check_space, default_space, parse_space, settings_space,
)
from seqgen.tune.staged import run_staged

__all__ = ["REG_SETTINGS", "SCHEDULERS", "SPACE_KINDS", "SearchResult", "apply_params", "check_space",
           "default_space", "parse_space", "run_search", "run_staged", "settings_space", "trial_run_name"]
