"""seqgen.evaluate: handwriting lines scored exactly as training validates them, dynamic evaluation
that scores before it adapts (and leaves the model alone), progress by tokens / lines."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from seqgen import config
from seqgen.evaluate import evaluate_tokens
from seqgen.handwriting.evaluate import evaluate_lines, line_metrics
from seqgen.handwriting.dataset import load_lines
from seqgen.handwriting.task import HandwritingTask
from seqgen.models.text import TextModel
from seqgen.progress import Progress
from tiny_storage import handwriting_dataset, new_storage


@pytest.fixture(scope="module")
def hw(tmp_path_factory):
    st = new_storage("evaluate")
    return st, handwriting_dataset(st, tmp_path_factory.mktemp("eval"))


def make_task(st, kind: str) -> HandwritingTask:
    cfg = config.load(None, [f"model.kind=handwriting_{kind}", "dataset=hw", "model.hidden_size=8",
                             "model.mixture_components=3", "model.window_components=2", "train.batch_size=2",
                             "train.seq_len=0"])
    return HandwritingTask(cfg, st)


@pytest.mark.parametrize("kind", ["prediction", "synthesis"])
def test_lines_score_as_training_validates_them(hw, kind):
    st, manifest = hw
    task = make_task(st, kind)
    torch.manual_seed(0)
    model = task.build_model()
    expected = task.evaluate(model)  # the training loop's validation numbers
    stats = evaluate_lines(model, load_lines(st, manifest, "valid"), task.meta, batch_size=3)
    got = stats.metrics("valid")
    assert got["valid_lines"] == expected["valid_lines"] > 0
    for key in ("valid_loss", "valid_loss_per_point", "valid_sse"):
        assert got[key] == pytest.approx(expected[key], rel=1e-5), key
    units = line_metrics(stats, "valid")
    assert units["valid_nats_per_line"] == pytest.approx(got["valid_loss"])
    assert units["valid_nats_per_point"] == pytest.approx(got["valid_loss_per_point"])
    assert units["valid_points"] == stats.points


def test_dynamic_lines_score_before_adapting_and_leave_the_model(hw):
    st, manifest = hw
    task = make_task(st, "prediction")
    torch.manual_seed(0)
    model = task.build_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lines = load_lines(st, manifest, "train")
    first = evaluate_lines(model, lines[:1], task.meta)
    dynamic = evaluate_lines(model, lines, task.meta, batch_size=1, dynamic_lr=0.1)
    static = evaluate_lines(model, lines, task.meta, batch_size=1)
    head = evaluate_lines(model, lines[:1], task.meta, batch_size=1, dynamic_lr=0.1)
    assert head.nll == pytest.approx(first.nll)  # line 1 is scored before any step
    assert dynamic.lines == static.lines and dynamic.nll != pytest.approx(static.nll)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_progress_counts_tokens_and_lines(hw):
    st, manifest = hw
    log = io.StringIO()
    torch.manual_seed(0)
    model = TextModel(config.ModelConfig(hidden_size=8), 7)
    ids = np.random.default_rng(0).integers(0, 7, 2000)
    with Progress("tokens", len(ids), "tokens", stream=log, every=0) as p:
        stats = evaluate_tokens(model, ids, streams=4, seq_len=50, progress=p)
    assert p.completed == stats.count > 1900
    task = make_task(st, "prediction")
    lines = load_lines(st, manifest, "train")
    with Progress("lines", len(lines), "lines", stream=log, every=0) as p:
        evaluate_lines(task.build_model(), lines, task.meta, batch_size=2, progress=p)
    assert p.completed == len(lines)
