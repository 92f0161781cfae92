"""Names of a search's trial runs on storage: ``<prefix>-trial-<NNN>``, and ``-r<k>`` for the k-th
PBT segment of a trial (see ``seqgen.tune.trial``)."""

from __future__ import annotations

import re

from seqgen.storage import Storage, check_name


def trial_run_name(prefix: str, trial_id: str, segment: int = 0) -> str:
    """``<prefix>-trial-<NNN>`` from a Tune trial id (``<hash>_<index>``), ``-r<k>`` for a PBT
    segment; always a valid run name (the prefix is shortened if need be)."""
    suffix = trial_id.rsplit("_", 1)[-1]
    tag = f"trial-{int(suffix):03d}" if suffix.isdigit() else "trial-" + re.sub(r"[^A-Za-z0-9._-]", "-", trial_id)
    tag += f"-r{segment}" if segment else ""
    return check_name(f"{prefix[:127 - len(tag)]}-{tag}", "run name")


def trial_runs(storage: Storage, prefix: str, trial_id: str) -> list[str]:
    """The trial's run and its PBT segments that exist on storage, in order."""
    runs, k = [trial_run_name(prefix, trial_id)], 1
    while storage.exists(storage.run_dir(trial_run_name(prefix, trial_id, k))):
        runs.append(trial_run_name(prefix, trial_id, k))
        k += 1
    return runs


def trial_id_from_path(path: str | None) -> str | None:
    """The Tune trial id in a trial directory's name (``<trainable>_<hash>_<index>_<params>...``)."""
    match = re.search(r"_([0-9a-f]{5}_\d{5})", (path or "").rstrip("/").rsplit("/", 1)[-1])
    return match.group(1) if match else None
