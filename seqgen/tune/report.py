"""Search results on storage: one row per trial -> ``results.csv`` / ``results.md``, every trial's
validation curve in one PNG, and the best checkpoint copied beside them, so a search directory
is complete on its own (the trial runs can be deleted or pruned without losing the winner).

A trial's history is seqgen's own record on storage (the evaluations in its latest checkpoint),
not what reached Tune (a trial with Ray Train workers that ASHA stops may have evaluated once more
than Tune saw). A PBT trial can be several runs ("segments", see ``seqgen.tune.trial``); each
segment records the step it started from, and the trial's curve is its segments laid end to end.
"""

from __future__ import annotations

import csv
import io
import json
import math

from fsspec.core import url_to_fs

from seqgen.storage import Storage, join, write_atomic

#: the quantities a curve can show, best first (bits per token where the task has them)
CURVE_KEYS = ("valid_bpc", "valid_loss", "score")
SEGMENT_FILE = "segment.json"  # in a segment's run dir: {"offset": steps before this segment}


def read_progress(checkpoint_url: str) -> dict | None:
    """A checkpoint's progress record (None if it cannot be read right now)."""
    try:
        fs, path = url_to_fs(checkpoint_url)
        with fs.open(join(path, "progress.json"), "rb") as f:
            return json.loads(f.read())
    except (FileNotFoundError, json.JSONDecodeError):  # pruned or being replaced: read it next time
        return None


def read_evals(checkpoint_url: str) -> list[dict] | None:
    """The evaluation history saved in a checkpoint (None if it cannot be read right now)."""
    progress = read_progress(checkpoint_url)
    return None if progress is None else progress.get("evals", [])


def trial_history(storage: Storage, runs: list[str]) -> list[dict]:
    """The evaluations of one trial over its segment runs (in order), each with ``run`` and
    ``trial_step`` = steps since the trial began (counting the steps of the trial it continues).

    A segment that PBT replaced ends at the evaluation PBT acted on: training waits in
    ``tune.report`` until Tune lets it go on, so it never evaluated further."""
    from seqgen import checkpoint as ckpt

    evals = []
    for run in runs:
        run_dir = storage.run_dir(run)
        offset = _read(storage, join(run_dir, SEGMENT_FILE), "offset", 0)
        found = ckpt.list_checkpoints(storage.url_of(run_dir))
        progress = (read_progress(found[-1]) or {}) if found else {}
        history = progress.get("evals", [])
        evals += [{**e, "trial_step": offset + int(e.get("step", 0)), "run": run} for e in history]
        if history and run == runs[-1] and progress.get("stopped"):
            evals[-1]["stopped"] = progress["stopped"]  # the run ended itself (time limit, early stopping)
    return evals


def _read(storage: Storage, path: str, key: str, default):
    return storage.read_json(path)[key] if storage.exists(path) else default


def summarise(storage: Storage, runs: list[str], metric: str, max_steps: int) -> dict:
    """A trial's row: best metric / valid loss / bpc over its whole history, steps, status, its
    best checkpoint, and its validation curve (kept for the plot, not written to the tables)."""
    from seqgen import checkpoint as ckpt

    out = {f"best_{metric}": math.nan, "best_valid_loss": math.nan, "best_valid_bpc": math.nan,
           "steps": 0, "status": "no result", "checkpoint": "", "curve": []}
    evals = trial_history(storage, runs)
    if not evals:
        return out
    for key in {metric, "valid_loss", "valid_bpc"}:
        values = [e[key] for e in evals if isinstance(e.get(key), (int, float))]
        if values:
            out[f"best_{key}"] = float(min(values))
    out["steps"] = evals[-1]["trial_step"]
    # completed its steps; stopped itself ("early stopping", "time limit"); or stopped by Tune's scheduler
    out["status"] = ("completed" if out["steps"] >= max_steps
                     else evals[-1].get("stopped") or "stopped by the scheduler")
    scored = [e for e in evals if isinstance(e.get(metric), (int, float))]
    best_run = min(scored, key=lambda e: e[metric])["run"] if scored else evals[-1]["run"]
    out["checkpoint"] = ckpt.best_checkpoint(storage.url_of(storage.run_dir(best_run)), metric)
    key = next((k for k in CURVE_KEYS if any(k in e for e in evals)), None)
    out["curve_key"] = key
    out["curve"] = [(e["trial_step"], e[key]) for e in evals if key and key in e]
    return out


def write_tables(storage: Storage, directory: str, title: str, rows: list[dict], columns: list[str]) -> None:
    """``results.csv`` (every column) and ``results.md`` (all but the checkpoint URL) atomically."""
    storage.write_bytes_atomic(join(directory, "results.csv"), to_csv(rows, columns).encode())
    storage.write_bytes_atomic(join(directory, "results.md"), to_markdown(title, rows, columns).encode())


def to_csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("" if isinstance(row.get(c), float) and math.isnan(row[c]) else row.get(c))
                         for c in columns})
    return buf.getvalue()


def to_markdown(title: str, rows: list[dict], columns: list[str]) -> str:
    shown = [c for c in columns if c != "checkpoint"]
    lines = [f"# {title}", "", "| " + " | ".join(shown) + " |", "|" + "|".join("---" for _ in shown) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(c)).replace("|", "\\|") for c in shown) + " |")
    return "\n".join(lines) + "\n"


def fmt(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return "" if value is None else str(value)


def copy_checkpoint(src_url: str, dst_url: str) -> None:
    """Copy a complete checkpoint directory (every file its manifest lists, the manifest last, so
    the copy is a checkpoint only once it is whole), between any fsspec URLs."""
    src_fs, src = url_to_fs(src_url)
    dst_fs, dst = url_to_fs(dst_url)
    with src_fs.open(join(src, "manifest.json"), "rb") as f:
        manifest_bytes = f.read()
    dst_fs.makedirs(dst, exist_ok=True)
    for name in json.loads(manifest_bytes)["files"]:
        with src_fs.open(join(src, name), "rb") as f, dst_fs.open(join(dst, name), "wb") as g:
            while chunk := f.read(1 << 22):
                g.write(chunk)
    write_atomic(dst_fs, join(dst, "manifest.json"), manifest_bytes)
