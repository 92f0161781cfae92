"""The catalog, handwriting and export commands through the real CLI (in-process, memory:// storage,
checkpoints written by seqgen.checkpoint): runs, datasets, inspect, --version, evaluate and sample
on handwriting checkpoints, export."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from seqgen.cli import app
from tiny_storage import handwriting_checkpoint, handwriting_dataset, new_storage, text_checkpoint, text_dataset

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    st = new_storage("cli-commands")
    text = text_dataset(st, tmp)
    hw = handwriting_dataset(st, tmp)
    evals = [{"step": 2, "score": 4.1, "valid_loss": 4.1, "valid_bpc": 4.1},
             {"step": 4, "score": 3.9, "valid_loss": 3.9, "valid_bpc": 3.9}]
    text_checkpoint(st, text, run="words", step=4, evals=evals)
    handwriting_checkpoint(st, hw, "prediction", run="pen")
    handwriting_checkpoint(st, hw, "synthesis", run="scribe")
    return st


def cli(st, *args):
    result = runner.invoke(app, [*args, "--storage", st.url])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and re.match(r"seqgen \d+\.\d+\.\d+ \(torch .+, ray .+, python .+\)", result.stdout)
    info = json.loads(runner.invoke(app, ["--version", "--json"]).stdout)
    assert set(info) == {"seqgen", "torch", "ray", "python"} and info["seqgen"]


def test_runs_table_and_json(store):
    out = cli(store, "runs")
    for name in ("words", "pen", "scribe"):
        assert name in out
    assert "valid_bpc 3.9 @ 4" in out and "4/10" in out
    rows = {r["name"]: r for r in json.loads(cli(store, "runs", "--json"))}
    assert rows["words"]["best_metric"] == "valid_bpc" and rows["words"]["best"] == 3.9 and rows["words"]["steps"] == 4
    assert rows["pen"]["kind"] == "handwriting_prediction" and rows["pen"]["best_metric"] == "valid_loss"
    assert rows["scribe"]["checkpoints"] == 1 and rows["scribe"]["updated"].endswith("Z")


def test_datasets_table_and_json(store):
    out = cli(store, "datasets")
    assert "tiny" in out and "char" in out and "handwriting" in out and "lines" in out
    rows = {d["name"]: d for d in json.loads(cli(store, "datasets", "--json"))}
    assert rows["tiny"]["unit"] == "tokens" and rows["tiny"]["size"] == rows["tiny"]["splits"]["train"] > 10_000
    assert rows["hw"]["kind"] == "handwriting" and rows["hw"]["splits"]["train"] >= 1 and rows["hw"]["symbols"] > 3


def test_inspect_text_and_handwriting(store):
    info = json.loads(cli(store, "inspect", "words", "--json"))
    assert info["step"] == 4 and info["dataset"] == "tiny" and info["kind"] == "text"
    assert info["started_at_steps"] == []  # these checkpoints are written by hand: no training attempt recorded
    assert info["best"] == {"metric": "valid_bpc", "value": 3.9, "step": 4}
    assert info["vocabulary"]["size"] == 58 and info["parameters"] > 1000
    assert set(info["files"]) >= {"model.pt", "config.json", "meta.json"} and info["config"]["model"]["hidden_size"] == 16
    info = json.loads(cli(store, "inspect", "scribe", "--json"))
    assert info["alphabet"]["size"] > 3 and "offset_stats" in info and not info["resumable"]
    out = cli(store, "inspect", "words")
    assert "parameters" in out and "vocabulary" in out and "58 char symbols" in out


def test_evaluate_handwriting_static_and_dynamic(store):
    rows = json.loads(cli(store, "evaluate", "pen", "--dynamic-lr", "0.05", "--batch-size", "1"))
    static, dynamic = rows["static"], rows["dynamic"]
    assert static["test_lines"] == dynamic["test_lines"] > 0
    points = static["test_points"]
    assert static["test_nats_per_point"] == pytest.approx(static["test_nats_per_line"] * static["test_lines"] / points)
    assert static["test_sse_per_point"] > 0
    assert dynamic["test_nats_per_line"] != static["test_nats_per_line"]  # the SGD steps changed later lines' scores
    rows = json.loads(cli(store, "evaluate", "scribe", "--split", "valid"))
    assert set(rows) == {"static"} and rows["static"]["valid_lines"] > 0


def test_sample_strokes_with_density(store, tmp_path):
    svg, png, density = tmp_path / "a.svg", tmp_path / "a.png", tmp_path / "d.png"
    out = cli(store, "sample", "pen", "--length", "40", "--seed", "3", "--bias", "1", "--out", str(svg),
              "--density", str(density))
    assert "40 points" in out and svg.read_text().lstrip().startswith("<svg") and density.read_bytes()[:4] == b"\x89PNG"
    again = tmp_path / "b.svg"
    cli(store, "sample", "pen", "--length", "40", "--seed", "3", "--bias", "1", "--out", str(again))
    assert again.read_text() == svg.read_text()  # seeded: the same strokes
    cli(store, "sample", "pen", "--length", "20", "--n", "2", "--out", str(png))
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_export_command(store, tmp_path):
    import torch

    out = tmp_path / "step.pt"
    summary = json.loads(cli(store, "export", "words", "--out", str(out), "--json"))
    assert summary["inputs"][0] == "token" and summary["outputs"][0] == "logits" and len(summary["state_shapes"]) == 4
    files = {"seqgen.json": ""}  # what the TorchScript archive tells another runtime about the model
    torch.jit.load(str(out), _extra_files=files)
    assert json.loads(files["seqgen.json"])["vocab"]["symbols"][:1] == ["\n"]
    onnx = tmp_path / "scribe.onnx"
    text = cli(store, "export", "scribe", "--format", "onnx", "--out", str(onnx))
    assert "inputs: x, chars, char_mask" in text and onnx.stat().st_size > 0
