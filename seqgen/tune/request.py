"""What a search request must satisfy before anything starts (no Ray, no trial): errors a user can
fix at once, with nothing left behind."""

from __future__ import annotations

from seqgen.storage import Storage, check_name
from seqgen.tune.naming import trial_run_name
from seqgen.tune.schedulers import SCHEDULERS


def check_request(storage: Storage, name: str, num_samples: int, max_concurrent: int, grace_period: int,
                  scheduler: str) -> None:
    """The search's name, storage, counts and scheduler; a search name is used once."""
    check_name(name, "search name")
    if not storage.shared_across_processes:
        raise ValueError(f"storage {storage.url} lives in one process; Tune trials run in other processes")
    if num_samples < 1 or max_concurrent < 1 or grace_period < 1:
        raise ValueError("num_samples, max_concurrent and grace_period must be >= 1")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r} (valid: {', '.join(SCHEDULERS)})")
    tune_dir = storage.tune_dir(name)
    if storage.exists(tune_dir) and storage.fs.ls(tune_dir, detail=False):
        raise FileExistsError(f"search {name!r} already exists at {storage.url_of(tune_dir)}: choose another name")


def check_runs_free(storage: Storage, prefix: str, trials: int) -> None:
    """Refuse a search whose trial runs would land on runs that exist already."""
    for i in range(trials):
        run = trial_run_name(prefix, f"x_{i:05d}")
        if storage.exists(storage.run_dir(run)):
            raise FileExistsError(f"run {run!r} already exists on {storage.url}: choose another search name")
