"""HandwritingTask: normalisation, padding and masks, length bucketing, the data cursor, the loss."""

from __future__ import annotations

import uuid

import fsspec
import numpy as np
import pytest
import torch

from seqgen.handwriting.prime import pen_step, writing_size
from seqgen import config
from seqgen.handwriting.dataset import load_lines, preprocess_handwriting
from seqgen.handwriting.iam import Alphabet
from seqgen.handwriting.mdn import mixture_nll, split_mixture
from seqgen.handwriting.task import Batch, HandwritingTask, LineStats
from seqgen.storage import Storage

N_LINES = 15


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    """A 15-line dataset (5 forms x 3 lines of 8..120 points) on memory://, 1 form in valid."""
    root, rng = tmp_path_factory.mktemp("iam"), np.random.default_rng(0)
    for f in range(5):
        form = f"x0{f}-000"
        (root / "ascii" / form).mkdir(parents=True)
        (root / "ascii" / form / f"{form}.txt").write_text("CSR:\n" + "\n".join(f"f{f} l{k}" + "ab"[: k] for k in range(3)))
        (root / "lineStrokes" / form).mkdir(parents=True)
        for k in range(1, 4):
            n = int(rng.integers(8, 120))
            pts = np.cumsum(rng.normal(5, 3, (n, 2)), 0)
            body = "".join(f'<Point x="{x:.1f}" y="{y:.1f}"/>' + ("</Stroke><Stroke>" if i % 9 == 8 else "")
                           for i, (x, y) in enumerate(pts))
            (root / "lineStrokes" / form / f"{form}-{k:02d}.xml").write_text(
                f"<WhiteboardCaptureSession><StrokeSet><Stroke>{body}</Stroke></StrokeSet></WhiteboardCaptureSession>")
    st = Storage.from_url(f"memory://hwtask-{uuid.uuid4().hex}")
    preprocess_handwriting(st, "hw", str(root), valid_fraction=0.2, use_ray=False)
    yield st
    fsspec.filesystem("memory").rm(st.url, recursive=True)


def make_cfg(kind="synthesis", *overrides):
    return config.load(None, [f"model.kind=handwriting_{kind}", "dataset=hw", "model.hidden_size=8", "model.num_layers=2",
                              "model.mixture_components=3", "model.window_components=2", "model.output_clip=100",
                              "train.batch_size=3", "train.seq_len=0", *overrides])


def test_meta_and_normalised_lines(storage):
    task = HandwritingTask(make_cfg(), storage)
    m = task.manifest
    lines = load_lines(storage, m, "train")
    points_per_char = sum(len(r["offsets"]) for r in lines) / sum(len(r["text"]) for r in lines)
    assert task.meta == {"kind": "handwriting_synthesis", "dataset": "hw", "alphabet": m["alphabet"],
                         "offset_mean": m["offset_mean"], "offset_std": m["offset_std"],
                         "points_per_char": pytest.approx(points_per_char),
                         "ink_per_char": pytest.approx(writing_size(lines)),  # the size own strokes are scaled to
                         "pen_step": pytest.approx(pen_step(lines))}  # and the density they are resampled to
    assert HandwritingTask(make_cfg("prediction"), storage).meta["alphabet"] is None
    assert task.num_train_examples == len(task.train) == m["splits"]["train"]["lines"] == 12
    raw = load_lines(storage, m, "train")[0]
    x, chars = task.train[0]
    assert torch.equal(x[0], torch.zeros(3))  # x_1 = 0 (sec. 2)
    np.testing.assert_allclose(x[1:, :2], (raw["offsets"][1:, :2] - m["offset_mean"]) / m["offset_std"], atol=1e-6)
    assert torch.equal(x[:, 2], torch.from_numpy(raw["offsets"][:, 2]))  # eos is not normalised
    assert Alphabet.from_json(m["alphabet"]).decode(chars) == raw["text"]


def test_collate_pads_and_masks(storage):
    task = HandwritingTask(make_cfg(), storage)
    lines = [task.train[i] for i in (0, 1, 2)]
    b = task.collate(lines)
    T = max(len(x) for x, _ in lines)
    assert b.x.shape == b.target.shape == (3, T - 1, 3) and b.mask.shape == (3, T - 1)
    for i, (x, c) in enumerate(lines):
        n = len(x)
        assert b.mask[i].sum() == n - 1 and b.mask[i, : n - 1].all()  # targets x_2..x_T are real
        assert torch.equal(b.x[i, : n - 1], x[:-1]) and torch.equal(b.target[i, : n - 1], x[1:])  # teacher forcing
        assert not b.target[i, n - 1 :].any()  # zero padding
        assert torch.equal(b.chars[i, : len(c)], c) and not b.chars[i, len(c) :].any()
        assert torch.equal(b.char_mask[i], b.chars[i] != 0)
    assert HandwritingTask(make_cfg("prediction"), storage).collate(lines[:1]).chars is None


def test_length_bucketing_covers_each_line_once(storage):
    task = HandwritingTask(make_cfg(), storage)  # 12 lines, B = 3: one pool, sorted by length
    batches = task.epoch_batches(0)
    assert sorted(np.concatenate(batches).tolist()) == list(range(N_LINES - 3)) and len(batches) == 4
    runs = sorted((task.lengths[b] for b in batches), key=min)
    assert all(a.max() <= b.min() for a, b in zip(runs, runs[1:]))  # batches are runs of the sorted lengths
    again = HandwritingTask(make_cfg(), storage)
    assert all(np.array_equal(a, b) for a, b in zip(again.epoch_batches(0), batches))  # seeded by (seed, epoch)
    orders = {tuple(np.concatenate(task.epoch_batches(e))) for e in range(6)}
    assert len(orders) > 1  # ... and reshuffled every epoch


def test_cursor_resumes_exactly(storage):
    a = HandwritingTask(make_cfg(), storage)
    for _ in range(3):
        a.next_batch()
    saved = a.state_dict()
    rest = [a.next_batch() for _ in range(6)]  # crosses the epoch boundary (4 batches an epoch)
    assert a.epoch == 2 and a.batch == 1
    b = HandwritingTask(make_cfg(), storage)
    b.load_state_dict(saved)
    for x, y in zip(rest, [b.next_batch() for _ in range(6)]):
        assert all(torch.equal(u, v) for u, v in zip(x, y))


def test_seq_len_caps_training_lines(storage, capsys):
    full = HandwritingTask(make_cfg(), storage)
    cap = int(np.median(full.lengths))
    task = HandwritingTask(make_cfg("synthesis", f"train.seq_len={cap}"), storage)
    assert len(task.train) == (full.lengths <= cap).sum() < len(full.train)
    assert "not trained on" in capsys.readouterr().err
    assert len(task.valid) == len(full.valid)  # validation keeps every line
    with pytest.raises(ValueError, match="no training lines"):
        HandwritingTask(make_cfg("synthesis", "train.seq_len=2"), storage)
    with pytest.raises(ValueError, match="divisible"):
        HandwritingTask(make_cfg(), storage, rank=0, world=2)


@pytest.mark.parametrize("kind", ["prediction", "synthesis"])
def test_loss_is_mean_per_line_nll(storage, kind):
    """The padded batch's loss = the mean over lines of eq. 26 computed on each line alone."""
    task = HandwritingTask(make_cfg(kind), storage)
    torch.manual_seed(0)
    model = task.build_model()
    batch = task.next_batch()
    loss, stats = task.loss(model, model, batch)
    M, per_line = task.cfg.model.mixture_components, []
    for i in range(batch.x.shape[0]):
        n = int(batch.mask[i].sum())
        chars = None if batch.chars is None else batch.chars[i : i + 1, : int(batch.char_mask[i].sum())]
        yhat, _ = model(batch.x[i : i + 1, :n], model.initial_state(1), chars, None)
        per_line.append(mixture_nll(split_mixture(yhat, M), batch.target[i : i + 1, :n]).sum())
    expected = torch.stack(per_line)
    torch.testing.assert_close(loss, expected.mean(), rtol=1e-5, atol=1e-4)
    assert stats.lines == 3 and stats.points == int(batch.mask.sum())
    assert stats.nll == pytest.approx(expected.sum().item(), rel=1e-5)
    assert stats.metrics("train")["train_loss"] == pytest.approx(expected.mean().item(), rel=1e-5)


def test_output_derivatives_clipped_per_line(storage):
    task = HandwritingTask(make_cfg("prediction", "model.output_clip=0.01"), storage)
    batch = task.collate(task.train[:3])
    yhat = (torch.randn(*batch.x.shape[:2], 6 * 3 + 1) * 5).requires_grad_()
    loss, _ = task.line_stats(yhat, batch, clip=True)
    loss.backward()
    assert yhat.grad.abs().max() <= 0.01 / 3 + 1e-9  # c per line = c / B on the mean over lines


def test_evaluate_and_line_stats(storage):
    task = HandwritingTask(make_cfg(), storage)
    model = task.build_model()
    metrics = task.evaluate(model)
    assert metrics["valid_lines"] == 3 and model.training
    points = sum(len(x) - 1 for x, _ in task.valid)
    assert metrics["valid_loss"] * 3 == pytest.approx(metrics["valid_loss_per_point"] * points)  # nats per line vs per point
    capped = HandwritingTask(make_cfg("synthesis", "train.eval_tokens=2"), storage).evaluate(model)
    assert capped["valid_lines"] == 2
    s = LineStats(10.0, 2, 20, 4.0) + LineStats(2.0, 1, 10, 2.0)
    assert s.metrics("x") == {"x_loss": 4.0, "x_loss_per_point": 0.4, "x_sse": 0.2, "x_lines": 3}
    assert isinstance(task.next_batch(), Batch)


def test_joined_lines_are_consecutive_lines_of_a_form_joined_as_priming_joins_them(storage):
    from seqgen.handwriting.sampling import primed
    from seqgen.handwriting.task import joined_lines

    lines = load_lines(storage, storage_manifest(storage), "train")
    joined = joined_lines(lines, 0.5, seed=0)
    assert len(joined) == 6  # round(0.5 x 12 lines), of the 8 consecutive pairs within a form
    by_id = {line["line_id"]: line for line in lines}
    for j in joined:
        a_id, b_id = j["line_id"].split("+")
        a, b = by_id[a_id], by_id[b_id]
        assert a["form_id"] == b["form_id"] == j["form_id"] and int(b_id[-2:]) == int(a_id[-2:]) + 1
        expected, _ = primed(a, b)
        assert j["text"] == f"{a['text']} {b['text']}" == expected["text"]
        np.testing.assert_array_equal(j["offsets"], expected["offsets"])
    assert [j["line_id"] for j in joined_lines(lines, 0.5, seed=0)] == [j["line_id"] for j in joined]  # seeded

    task = HandwritingTask(make_cfg("synthesis", "train.join_lines=0.5", "train.seq_len=150"), storage)
    singles = sum(len(line["offsets"]) <= 150 for line in lines)
    pairs = sum(len(j["offsets"]) <= 150 for j in joined)
    assert len(task.train) == singles + pairs and pairs > 0  # lengths within the limit, the rest left out
    assert max(len(x) for x, _ in task.train) <= 150
    texts = {task.alphabet.decode(c.numpy()) for _, c in task.train}
    assert {j["text"] for j in joined if len(j["offsets"]) <= 150} <= texts


def storage_manifest(storage):
    from seqgen.data.text import load_manifest

    return load_manifest(storage, "hw")
