"""The handwriting recognizer (BiLSTM + CTC): decoding and error rates on hand-worked cases, packed
batches against lines read alone, the task's loss and metrics, and a recognizer that really learns
to read three symbols drawn as distinct stroke shapes, trained by the real pipeline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from seqgen import config
from seqgen.handwriting.dataset import load_lines, preprocess_handwriting
from seqgen.handwriting.iam import END, Alphabet
from seqgen.handwriting.recognizer import (
    HandwritingRecognizer,
    RecognitionTask,
    ReadingStats,
    best_path,
    line_steps,
    read_steps,
    reading_stats,
)
from seqgen.storage import Storage


def test_best_path_merges_repeats_drops_blanks_and_stops_at_the_length():
    alphabet = Alphabet([END, "a", "b"])
    path = [0, 1, 1, 0, 1, 2, 2, 0, 2, 2]  # a a _ a b b _ b b -> "aabb"; the last two frames are padding
    log_probs = torch.log(torch.nn.functional.one_hot(torch.tensor([path]), 3).float() * 0.9 + 0.05)
    assert best_path(log_probs, torch.tensor([10]), alphabet) == ["aabb"]
    assert best_path(log_probs, torch.tensor([8]), alphabet) == ["aab"]


def test_reading_stats_are_edit_distances_over_the_reference_length():
    s = reading_stats(["helo wrld", "abc"], ["hello world", "abc"])
    assert (s.char_errors, s.chars, s.word_errors, s.words, s.lines) == (2, 14, 2, 3, 2)
    assert s.cer == pytest.approx(2 / 14) and s.wer == pytest.approx(2 / 3)
    assert (s + ReadingStats(1, 1, 6, 0, 1)).cer == pytest.approx(3 / 20)
    assert reading_stats(["a b"], ["a c d"]).word_errors == 2  # one substitution, one deletion


def test_a_padded_batch_reads_each_line_as_if_alone():
    torch.manual_seed(0)
    model = HandwritingRecognizer(config.ModelConfig(hidden_size=6, num_layers=2, frame_stack=3), 5).double().eval()
    lines = [torch.randn(n, 3, dtype=torch.float64) for n in (7, 12, 3)]
    batch = torch.nn.utils.rnn.pad_sequence(lines, batch_first=True)
    log_probs, n = model(batch, torch.tensor([7, 12, 3]))
    assert n.tolist() == [3, 4, 1]  # ceil(T / 3) frames
    for i, line in enumerate(lines):
        alone, m = model(line[None], torch.tensor([len(line)]))
        torch.testing.assert_close(log_probs[i, : m[0]], alone[0])


def test_recognizer_gradients_in_float64():
    torch.manual_seed(0)
    model = HandwritingRecognizer(config.ModelConfig(hidden_size=3, num_layers=1, frame_stack=2), 4).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: model(x, torch.tensor([5, 3]))[0], (x,))


def test_augment_scales_and_slants_in_data_units():
    from seqgen.handwriting.recognizer import augment

    mean, std = torch.tensor([2.0, -1.0]), torch.tensor([4.0, 3.0])
    raw = torch.tensor([[[6.0, 2.0, 0.0], [-2.0, 5.0, 1.0], [0.0, 0.0, 0.0]]])  # (1, 3, 3), last row padding
    steps = torch.cat([(raw[..., :2] - mean) / std, raw[..., 2:]], -1)
    mask = torch.tensor([[True, True, False]])
    same = augment(steps, mask, mean, std, 0.0, torch.Generator())
    torch.testing.assert_close(same[:, :2], steps[:, :2])
    g = torch.Generator().manual_seed(0)
    sx, sy, k = ((torch.rand(1, 1, generator=g) * 2 - 1) * 0.2 for _ in range(3))
    out = augment(steps, mask, mean, std, 0.2, torch.Generator().manual_seed(0))
    data = torch.cat([out[..., :2] * std + mean, out[..., 2:]], -1)[0, :2]
    dx, dy = raw[0, :2, 0], raw[0, :2, 1]
    expected_dx = (1 + sx) * dx + k * (1 + sy) * dy
    torch.testing.assert_close(data[:, 0], expected_dx[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(data[:, 1], ((1 + sy) * dy)[0], rtol=1e-5, atol=1e-5)
    assert out[0, 2].abs().sum() == 0 and torch.equal(out[..., 2], steps[..., 2])  # padding 0, pen bits kept


# --------------------------------------------------------------------------- the pipeline

SHAPES = {  # three symbols as distinct pen strokes, in IAM's whiteboard units (y grows downwards)
    "o": lambda t: np.stack([12 + 10 * np.cos(2 * np.pi * t), 20 + 10 * np.sin(2 * np.pi * t)], 1),  # a loop
    "l": lambda t: np.stack([8 + 0 * t, 30 * t], 1),  # a vertical bar, drawn downwards
    "z": lambda t: np.stack([20 * t, 20 + 8 * np.sign(np.sin(6 * np.pi * t + 0.1))], 1),  # a zigzag
}


def _write_iam(root, texts_by_form: dict[str, list[str]], seed: int) -> None:
    """An IAM-OnDB layout (ascii + lineStrokes) whose lines draw their text with `SHAPES`."""
    rng = np.random.default_rng(seed)
    for form, texts in texts_by_form.items():
        (root / "ascii" / form).mkdir(parents=True)
        (root / "ascii" / form / f"{form}.txt").write_text("CSR:\n" + "\n".join(texts) + "\n")
        (root / "lineStrokes" / form).mkdir(parents=True)
        for k, text in enumerate(texts, 1):
            strokes, x0 = [], 0.0
            for ch in text:
                t = np.linspace(0, 1, int(rng.integers(14, 20)))
                pts = SHAPES[ch](t) * rng.uniform(0.85, 1.15) + rng.normal(0, 0.4, (len(t), 2))
                strokes.append(pts + [x0, 0])
                x0 += 30 + rng.uniform(-3, 3)
            body = "".join("<Stroke>" + "".join(f'<Point x="{x:.1f}" y="{y:.1f}"/>' for x, y in s) + "</Stroke>"
                           for s in strokes)
            (root / "lineStrokes" / form / f"{form}-{k:02d}.xml").write_text(
                f"<WhiteboardCaptureSession><StrokeSet>{body}</StrokeSet></WhiteboardCaptureSession>")


def _texts(rng, n: int) -> list[str]:
    return ["".join(rng.choice(list(SHAPES), int(rng.integers(2, 5)))) for _ in range(n)]


@pytest.fixture(scope="module")
def symbols(tmp_path_factory):
    """A dataset of 60 lines drawing 'o', 'l', 'z' (12 forms x 5 lines; 2 forms held out for valid)."""
    root, rng = tmp_path_factory.mktemp("symbols"), np.random.default_rng(1)
    _write_iam(root, {f"s{f:02d}-000": _texts(rng, 5) for f in range(12)}, seed=2)
    storage = Storage.from_url(str(tmp_path_factory.mktemp("symbols-store")))
    preprocess_handwriting(storage, "symbols", str(root), valid_fraction=0.2, use_ray=False)
    return storage


def tiny_cfg(*overrides):
    return config.load(None, ["run_name=rec", "dataset=symbols", "model.kind=handwriting_recognition",
                              "model.hidden_size=24", "model.num_layers=1", "model.frame_stack=2",
                              "optim.name=adam", "optim.lr=0.01", "train.batch_size=8", "train.seq_len=0",
                              "train.num_workers=0", "train.progress=false", *overrides])


def test_augmented_batches_replay_exactly_on_resume(symbols):
    task = RecognitionTask(tiny_cfg("train.augment=0.2"), symbols)
    task.next_batch()
    state = task.state_dict()
    a = task.next_batch()
    resumed = RecognitionTask(tiny_cfg("train.augment=0.2"), symbols)
    resumed.load_state_dict(state)
    b = resumed.next_batch()
    torch.testing.assert_close(a.target, b.target)
    plain = RecognitionTask(tiny_cfg(), symbols)
    plain.load_state_dict(state)
    c = plain.next_batch()
    assert not torch.allclose(a.target, c.target) and torch.equal(a.mask, c.mask)


def test_task_meta_loss_and_metrics(symbols):
    task = RecognitionTask(tiny_cfg(), symbols)
    assert task.meta["kind"] == "handwriting_recognition" and task.meta["alphabet"] == task.manifest["alphabet"]
    model = task.build_model()
    batch = task.next_batch()
    loss, stats = task.loss(model, model, batch)
    assert loss.ndim == 0 and math.isfinite(loss.item()) and stats.lines == len(batch.x)
    assert stats.nll == pytest.approx(loss.item() * stats.lines, rel=1e-5)  # nats per line, averaged
    metrics = task.evaluate(model)
    assert set(metrics) == {"valid_loss", "valid_cer", "valid_wer", "valid_lines"}
    assert metrics["valid_lines"] == task.manifest["splits"]["valid"]["lines"]


@pytest.mark.slow
def test_the_recognizer_learns_to_read_drawn_symbols(ray_session, symbols, tmp_path):
    """Trained by `seqgen.train.run.train` (the CLI's path) on 50 lines, it reads held-out drawings
    (the valid forms, and new lines drawn with another seed) without an error."""
    from seqgen.catalog import find_checkpoint, load_model
    from seqgen.train.run import train

    train(tiny_cfg("train.max_steps=300", "train.eval_every=100"), symbols)
    model, loaded = load_model(find_checkpoint(symbols, "rec"))
    assert loaded.progress["evals"][-1]["valid_cer"] == 0.0
    assert all(e["score"] == e["valid_cer"] for e in loaded.progress["evals"])  # kept by CER

    root, rng = tmp_path / "new", np.random.default_rng(7)
    texts = _texts(rng, 8)
    _write_iam(root, {"n00-000": texts}, seed=8)
    other = Storage.from_url(str(tmp_path / "store"))
    preprocess_handwriting(other, "new", str(root), valid_fraction=0.0, use_ray=False)
    lines = load_lines(other, other_manifest(other), "train")
    assert read_steps(model, loaded.meta, line_steps(lines)) == [line["text"] for line in lines]


def other_manifest(storage):
    from seqgen.data.text import load_manifest

    return load_manifest(storage, "new")


def test_a_recognizer_has_no_one_step_function_to_export():
    from seqgen.export import step_module

    model = HandwritingRecognizer(config.ModelConfig(hidden_size=4, num_layers=1), 5)
    with pytest.raises(ValueError, match="handwriting_recognition model has no one-step function to export"):
        step_module(model, "handwriting_recognition")


def test_a_recognizer_is_ranked_by_its_cer():
    from seqgen.catalog import best_eval

    evals = [{"step": 100, "valid_loss": 15.0, "valid_cer": 0.20}, {"step": 200, "valid_loss": 16.0, "valid_cer": 0.15}]
    assert best_eval(evals, "handwriting_recognition") == ("valid_cer", 0.15, 200)
    assert best_eval(evals, "handwriting_synthesis") == ("valid_loss", 15.0, 100)
    assert RecognitionTask.score_metric == "valid_cer"
