"""The `seqgen` command end to end, in-process on memory:// storage: preprocess -> train ->
evaluate (static + dynamic) -> sample -> score, and the clear errors users see."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from seqgen.cli import app

pytestmark = pytest.mark.ray
runner = CliRunner()
STORE = ["--storage", "memory://cli"]


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def trained(ray_session):
    code, out = invoke("preprocess", "shakespeare", *STORE)
    assert code == 0 and "dataset shakespeare" in out, out
    code, out = invoke("train", *STORE, "run_name=cli", "model.hidden_size=16", "train.batch_size=8",
                       "train.seq_len=20", "train.max_steps=4", "train.eval_every=2", "train.eval_tokens=1000",
                       "train.progress=false")
    assert code == 0 and "best checkpoint" in out, out
    return "cli"


def test_sample_is_reproducible_and_primed(trained):
    a = invoke("sample", trained, *STORE, "--prompt", "ROMEO:", "--length", "30", "--seed", "7")
    b = invoke("sample", trained, *STORE, "--prompt", "ROMEO:", "--length", "30", "--seed", "7")
    assert a[0] == 0 and a == b and a[1].startswith("ROMEO:")


def test_beam_search_prints_k_sequences_with_log_probs(trained):
    code, out = invoke("sample", trained, *STORE, "--beam", "3", "--length", "5")
    assert code == 0 and out.count("[log p = ") == 3


def test_score_and_evaluate(trained):
    code, out = invoke("score", trained, "To be, or not to be", *STORE)
    assert code == 0 and json.loads(out)["tokens"] == 19
    code, out = invoke("evaluate", trained, *STORE, "--split", "valid", "--max-tokens", "3000",
                       "--dynamic-lr", "0.05")
    rows = json.loads(out)
    assert code == 0 and set(rows) == {"static", "dynamic"}
    assert rows["static"]["valid_tokens"] == rows["dynamic"]["valid_tokens"] > 0


@pytest.mark.parametrize("args, message", [
    (["sample", "cli", "--prompt", "naïve {"], "never seen"),
    (["train", "model.hidden=3"], "unknown config key 'model.hidden'"),
    (["train", "train.max_steps=many"], "train.max_steps"),
    (["sample", "no-such-run"], "no run 'no-such-run'"),
    (["sample", "../escape"], "checkpoint not found: ../escape"),
    (["preprocess", "mine", "--input", "/nonexistent/corpus.txt"], "not found: /nonexistent/corpus.txt"),
    (["preprocess", "../up", "--input", "README.md"], "invalid dataset name"),
])
def test_clear_errors(trained, args, message):
    code, out = invoke(*args, *STORE)
    assert code == 2 and message in out, out


def test_write_works_out_of_the_box_with_the_bundled_model(tmp_path):
    out = tmp_path / "line.svg"
    code, text = invoke("write", "hello world", "--bias", "2", "--seed", "1", "--out", str(out),
                        "--phi", str(tmp_path / "phi.png"))
    assert code == 0, text
    assert out.read_text().lstrip().startswith("<") and (tmp_path / "phi.png").read_bytes()[:4] == b"\x89PNG"
    code, text = invoke("write", "héllo {", "--out", str(out))
    assert code == 2 and "cannot write" in text and 'unknown="substitute"' in text
