"""A finished search's results: one row per trial (from Tune's ResultGrid and the trials' own
records on storage), then the files under ``<root>/tune/<search>/`` (``seqgen.tune.report``) and
the best trial, whose best checkpoint is copied to ``best/``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from seqgen.config import ExperimentConfig, load_json, to_dict
from seqgen.storage import Storage, join
from seqgen.tune.naming import trial_id_from_path, trial_run_name, trial_runs
from seqgen.train.curves import curves_png
from seqgen.tune.report import copy_checkpoint, summarise, write_tables
from seqgen.tune.space import SETTING, describe


@dataclass
class SearchResult:
    rows: list[dict]  # one per trial, as in results.csv
    best_checkpoint: str  # URL of the copy of the best trial's best checkpoint, <search dir>/best
    best_config: ExperimentConfig  # the best trial's full config (as saved in that checkpoint)
    best_run: str = ""  # run name of the best trial
    best_params: dict = field(default_factory=dict)  # its searched parameters
    results_dir: str = ""  # URL of <root>/tune/<search>/


def trial_rows(storage: Storage, grid, prefix: str, keys: list[str], metric: str, max_steps: int,
               **extra) -> tuple[list[dict], list[str]]:
    """One row per trial of a ResultGrid (its parameters, then ``report.summarise``), and the
    trials' errors as lines."""
    rows, errors = [], []
    for result in grid:
        # the trial's own directory names it: its last metrics may be another trial's (PBT hands a
        # trial the result of the checkpoint it clones, and a clone at the last step reports nothing)
        trial_id = trial_id_from_path(result.path) or (result.metrics or {}).get("trial_id") or "unknown"
        run = trial_run_name(prefix, trial_id)
        params = {k: _plain(result.config.get(k)) for k in keys}
        row = {**extra, "trial": run, **params, "setting": describe(params),  # the label wins over a `setting` key
               **summarise(storage, trial_runs(storage, prefix, trial_id), metric, max_steps)}
        if result.error is not None:
            row["status"] = "error"
            lines = str(result.error).strip().splitlines() or [repr(result.error)]
            errors.append(f"{run}: {lines[-1]}")
        rows.append(row)
    rows.sort(key=lambda r: r["trial"])
    return rows, errors


def finish(storage: Storage, name: str, rows: list[dict], errors: list[str], keys: list[str], metric: str,
           title: str, marker_step: int | None = None) -> SearchResult:
    """Write the tables, the curves and best.json, copy the best checkpoint to ``best/``."""
    tune_dir = storage.tune_dir(name)
    params = [k for k in keys if k != SETTING]  # a `setting` key is the label column itself
    columns = [*(["stage"] if any("stage" in r for r in rows) else []), "trial", "setting", *params, f"best_{metric}",
               *[c for c in ("best_valid_loss", "best_valid_bpc") if c != f"best_{metric}"],
               "steps", "status", "checkpoint"]
    write_tables(storage, tune_dir, title, rows, columns)
    key = next((r["curve_key"] for r in rows if r.get("curve_key")), "score")
    curves = [(f"{r['trial']} ({r['setting']})", r["curve"]) for r in rows]
    storage.write_bytes_atomic(join(tune_dir, "curves.png"),
                               curves_png(f"{name}: {key.replace('_', ' ')} of every trial", curves,
                                          key.replace("_", " "), marker_step))

    ranked = [r for r in rows if r["checkpoint"] and isinstance(r[f"best_{metric}"], float)
              and not math.isnan(r[f"best_{metric}"])]
    if not ranked:
        raise RuntimeError(f"search {name!r}: no trial produced a checkpoint"
                           + (f"; errors: {'; '.join(errors)}" if errors else ""))
    best = min(ranked, key=lambda r: r[f"best_{metric}"])
    best_params = {k: best[k] for k in keys if k in best}
    copy_url = storage.url_of(join(tune_dir, "best"))
    copy_checkpoint(best["checkpoint"], copy_url)
    best_config = load_json(storage.read_json(join(tune_dir, "best", "config.json")))
    storage.write_json_atomic(join(tune_dir, "best.json"), {
        "search": name, "metric": metric, "mode": "min", "trial": best["trial"],
        **({"stage": best["stage"]} if "stage" in best else {}), "setting": best["setting"],
        "run": storage.url_of(storage.run_dir(best["trial"])), "checkpoint": copy_url,
        "source_checkpoint": best["checkpoint"], f"best_{metric}": best[f"best_{metric}"],
        "params": best_params, "config": to_dict(best_config),
    })
    return SearchResult(rows, copy_url, best_config, best["trial"], best_params, storage.url_of(tune_dir))


def _plain(value):
    """numpy scalars (Tune samples some) -> Python scalars, for the tables and JSON."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, dict, str)) else value
