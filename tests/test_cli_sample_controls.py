"""``seqgen sample`` with --top-p and --stop on a tiny text checkpoint (in-process)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from seqgen.cli import app
from tiny_storage import new_storage, text_checkpoint, text_dataset

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    st = new_storage("cli-sample-controls")
    text_checkpoint(st, text_dataset(st, tmp_path_factory.mktemp("cli")), run="words", step=4)
    return st


def sample(st, *args) -> str:
    result = runner.invoke(app, ["sample", "words", "--length", "80", "--seed", "4", *args, "--storage", st.url])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout.rstrip("\n")


def test_stop_ends_the_sample_before_the_first_stop_string(store):
    full = sample(store)
    stop = full[50:52]
    assert sample(store, "--stop", stop) == full[: full.find(stop)]
    other = full[20:21]
    assert sample(store, "--stop", stop, "--stop", other) == full[: min(full.find(stop), full.find(other))]


def test_top_p(store):
    assert sample(store, "--top-p", "1") == sample(store)
    assert sample(store, "--top-p", "0.000001") == sample(store, "--temperature", "0")


@pytest.mark.parametrize("args", [["--stop", "a", "--stop", "b", "--stop", "c", "--stop", "d", "--stop", "e"],
                                  ["--top-p", "0"], ["--beam", "2", "--stop", "a"]])
def test_bad_controls_are_refused(store, args):
    result = runner.invoke(app, ["sample", "words", *args, "--storage", store.url])
    assert result.exit_code != 0
