"""`seqgen tune` shows its progress (trials done / total, running, best so far) in logs, through a
real Ray Tune search of two tiny trials on a local directory."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from seqgen.cli import app
from seqgen.storage import Storage, join

TINY = ["dataset=tiny", "model.hidden_size=8", "model.num_layers=1", "train.max_steps=2", "train.eval_every=1",
        "train.eval_tokens=500", "train.batch_size=4", "train.seq_len=10", "train.progress=false",
        "train.num_workers=0", "train.cpus_per_worker=1", "train.max_failures=0"]


@pytest.mark.ray
def test_tune_progress_lines(ray_session, tmp_path, monkeypatch):
    from tiny_storage import text_dataset

    store = str(tmp_path / "store")
    text_dataset(Storage.from_url(store), tmp_path)
    monkeypatch.setenv("SEQGEN_PROGRESS_EVERY", "0")
    result = CliRunner().invoke(app, ["tune", "t", *TINY, "--space", "optim.lr=grid:0.001,0.003", "--num-samples", "1",
                                      "--storage", store])
    assert result.exit_code == 0, (result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.startswith("[tune t]")]
    assert any(re.search(r"0/2 trials \(0%\), .*1 running", line) for line in lines), lines
    final = lines[-1]
    assert final.startswith("[tune t] done: 2/2 trials (100%)") and "0 running" in final, final
    best = Storage.from_url(store).read_json(join(Storage.from_url(store).tune_dir("t"), "best.json"))
    shown = float(re.search(r"best score ([\d.e+-]+)", final).group(1))
    assert shown == pytest.approx(best["best_score"], rel=1e-3)
