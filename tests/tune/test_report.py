"""seqgen.tune.report: tables, the curves PNG, trial histories over PBT segments, checkpoint copies."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

from seqgen.storage import Storage, join
from seqgen.train.curves import curves_png
from seqgen.tune.report import copy_checkpoint, summarise, to_csv, to_markdown, write_tables


def _fake_run(storage: Storage, run: str, evals: list[dict], offset: int | None = None, step: int = 0,
              stopped: str | None = None) -> str:
    """A run with one complete checkpoint holding ``evals`` (the files a checkpoint's manifest lists);
    ``stopped``: why the training loop ended it."""
    url = storage.url_of(join(storage.run_dir(run), f"checkpoint_{step or evals[-1]['step']:08d}"))
    progress = {"evals": evals, **({"stopped": stopped} if stopped else {})}
    files = {"progress.json": json.dumps(progress).encode(), "model.pt": b"weights", "config.json": b"{}"}
    fs = storage.fs
    path = join(storage.run_dir(run), url.rsplit("/", 1)[-1])
    fs.makedirs(path, exist_ok=True)
    for name, data in files.items():
        with fs.open(join(path, name), "wb") as f:
            f.write(data)
    with fs.open(join(path, "manifest.json"), "wb") as f:
        f.write(json.dumps({"format": 1, "files": {k: len(v) for k, v in files.items()}}).encode())
    if offset is not None:
        storage.write_json_atomic(join(storage.run_dir(run), "segment.json"), {"offset": offset})
    return url


def test_tables_csv_and_markdown(tmp_path):
    rows = [{"stage": 1, "trial": "a", "setting": "x|y", "best_score": 1.23456, "steps": 4, "checkpoint": "/c"},
            {"stage": 2, "trial": "b", "setting": "z", "best_score": math.nan, "steps": 0, "checkpoint": ""}]
    columns = ["stage", "trial", "setting", "best_score", "steps", "checkpoint"]
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows, columns))))
    assert [r["stage"] for r in parsed] == ["1", "2"] and parsed[1]["best_score"] == "" and parsed[0]["checkpoint"] == "/c"
    md = to_markdown("T", rows, columns)
    assert md.startswith("# T\n") and "| 1 | a | x\\|y | 1.235 | 4 |" in md and "checkpoint" not in md
    storage = Storage.from_url(str(tmp_path))
    write_tables(storage, storage.tune_dir("s"), "T", rows, columns)
    assert storage.exists(join(storage.tune_dir("s"), "results.csv"))
    assert storage.exists(join(storage.tune_dir("s"), "results.md"))


def test_curves_png_is_a_png_with_one_line_per_trial():
    png = curves_png("t", [("a", [(2, 3.0), (4, 2.5)]), ("b", [(6, 2.4)]), ("empty", [])], "valid bpc", 4)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_status_says_why_a_trial_ended(tmp_path):
    storage = Storage.from_url(str(tmp_path))
    evals = [{"step": 2, "score": 3.0}, {"step": 3, "score": 2.9}]
    for run, stopped in (("time", "time limit"), ("patience", "early stopping"), ("asha", None)):
        _fake_run(storage, run, evals, stopped=stopped)
    assert [summarise(storage, [run], "score", max_steps=10)["status"] for run in ("time", "patience", "asha")] == \
        ["time limit", "early stopping", "stopped by the scheduler"]
    assert summarise(storage, ["time"], "score", max_steps=3)["status"] == "completed"


def test_summarise_joins_pbt_segments_end_to_end(tmp_path):
    storage = Storage.from_url(str(tmp_path))
    _fake_run(storage, "t", [{"step": 2, "score": 3.0, "valid_bpc": 4.0}, {"step": 4, "score": 2.0, "valid_bpc": 3.0}])
    best = _fake_run(storage, "t-r1", [{"step": 2, "score": 1.5, "valid_bpc": 2.5}], offset=4)
    row = summarise(storage, ["t", "t-r1"], "score", max_steps=6)
    assert row["curve"] == [(2, 4.0), (4, 3.0), (6, 2.5)] and row["curve_key"] == "valid_bpc"
    assert (row["best_score"], row["best_valid_bpc"], row["steps"], row["status"]) == (1.5, 2.5, 6, "completed")
    assert row["checkpoint"] == best
    assert summarise(storage, ["missing"], "score", 6)["status"] == "no result"


def test_copy_checkpoint_copies_every_listed_file_then_the_manifest(tmp_path):
    storage = Storage.from_url(str(tmp_path))
    src = _fake_run(storage, "r", [{"step": 2, "score": 1.0}])
    copy_checkpoint(src, str(tmp_path / "copy"))
    for name in ("progress.json", "model.pt", "config.json", "manifest.json"):
        assert (tmp_path / "copy" / name).read_bytes() == (tmp_path / src.split(str(tmp_path) + "/")[1] / name).read_bytes()
    with pytest.raises(FileNotFoundError):
        copy_checkpoint(str(tmp_path / "nothing"), str(tmp_path / "copy2"))
