"""seqgen.progress: periodic lines in logs (counts, MB/s, notes, a final line), silence when asked or
when work is short, a rich bar on a terminal; preprocessing reports through it; a real Ray Tune
search drives its Tune callback."""

from __future__ import annotations

import io
import re

import pytest

from seqgen.progress import Progress, track


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_lines_show_counts_rate_and_note():
    log = io.StringIO()
    with Progress("preprocess x: count", total=4, unit="tasks", stream=log, every=0) as p:
        p.advance(1, nbytes=2_000_000)
        p.note("best 1.5")
        p.advance(3, nbytes=6_000_000)
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("[preprocess x: count] 1/4 tasks (25%), ") and "MB/s" in lines[0]
    assert "best 1.5" in lines[1]
    assert lines[-1].startswith("[preprocess x: count] done: 4/4 tasks (100%)") and "elapsed" in lines[-1]


def test_short_work_prints_nothing_in_logs_and_progress_can_be_silenced(monkeypatch):
    log = io.StringIO()
    for item in track(range(5), "quick", total=5, unit="items", stream=log, every=60):
        pass
    assert log.getvalue() == ""  # under the interval: no line, and so no final line either
    monkeypatch.setenv("SEQGEN_PROGRESS", "0")
    with Progress("silenced", 3, stream=log, every=0) as p:
        p.advance(3)
    assert log.getvalue() == ""


def test_rates_without_bytes_and_unknown_totals():
    log = io.StringIO()
    with Progress("evaluate test (static)", None, "tokens", stream=log, every=0) as p:
        p.advance(500)
    assert re.match(r"\[evaluate test \(static\)\] 500 tokens, [\d.e+]+ tokens/s, 0:00 elapsed", log.getvalue())


def test_terminal_gets_a_rich_bar():
    term = Terminal()
    with Progress("evaluate", 10, "lines", stream=term) as p:
        p.advance(10)
    out = term.getvalue()
    assert "evaluate" in out and "10/10" in out and "[evaluate]" not in out  # a bar, not log lines


def test_preprocessing_reports_tasks_and_mb_per_s(tmp_path, monkeypatch, capsys):
    from tiny_storage import new_storage, text_dataset

    monkeypatch.setenv("SEQGEN_PROGRESS_EVERY", "0")
    text_dataset(new_storage("progress"), tmp_path, nbytes=30_000)
    err = capsys.readouterr().err
    assert re.search(r"\[preprocess tiny: count\] done: \d+/\d+ tasks \(100%\), [\d.]+ MB/s", err), err
    assert "[preprocess tiny: encode] done:" in err


def test_handwriting_preprocessing_reports_mb_per_s(tmp_path, monkeypatch, capsys):
    from tiny_storage import handwriting_dataset, new_storage

    monkeypatch.setenv("SEQGEN_PROGRESS_EVERY", "0")
    handwriting_dataset(new_storage("progress-hw"), tmp_path)
    err = capsys.readouterr().err  # the bytes of the stroke and transcription files each task parsed
    assert re.search(r"\[preprocess hw: parse\] done: \d+/\d+ tasks \(100%\), [\d.]+ MB/s", err), err


@pytest.mark.ray
def test_training_counts_steps_and_prints_evaluations(ray_session, tmp_path, monkeypatch):
    """A local-mode run through the CLI: step lines on stderr (logs), evaluation lines on stdout."""
    from typer.testing import CliRunner

    from seqgen.cli import app
    from tiny_storage import new_storage, text_dataset

    st = new_storage("progress-train")
    text_dataset(st, tmp_path)
    monkeypatch.setenv("SEQGEN_PROGRESS_EVERY", "0")
    result = CliRunner().invoke(app, ["train", "run_name=p", "dataset=tiny", "model.hidden_size=8", "train.batch_size=4",
                                      "train.seq_len=10", "train.max_steps=4", "train.eval_every=2",
                                      "train.eval_tokens=200", "--storage", st.url])
    assert result.exit_code == 0, (result.output, result.exception)
    assert re.search(r"^\[train p\] 3/4 steps \(75%\), [\d.e+]+ steps/s", result.stderr, re.M), result.stderr
    assert "[train p] done: 4/4 steps (100%)" in result.stderr
    assert result.stdout.count("[p] step=") == 2  # one line per evaluation
