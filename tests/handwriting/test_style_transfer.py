"""`seqgen evaluate SYNTH --style-transfer`: lines joined the way priming joins them, only line B's
points counted (a hand-worked case), the report's keys, and its exit-2 cases."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from seqgen.catalog import BUNDLED_HANDWRITING, load_model
from seqgen.cli import app
from seqgen.handwriting.evaluate import nats_per_point
from seqgen.handwriting.sampling import primed
from seqgen.handwriting.mdn import mixture_nll, split_mixture
from seqgen.handwriting.sampling import normalise
from seqgen.storage import Storage
from tests.handwriting.test_recognizer import _write_iam
from tests.handwriting.tiny_models import save_checkpoint, tiny  # noqa: F401 - the fixture

runner = CliRunner()


def _line(rng, n: int, text: str) -> dict:
    offsets = rng.normal(0, 5, (n, 3)).astype(np.float32)
    offsets[:, 2] = rng.random(n) < 0.1
    offsets[0] = [0, 0, 1]
    return {"offsets": offsets, "text": text}


def test_priming_joins_texts_and_strokes_and_counts_only_b(tiny):
    _, synth_url, _, _ = tiny
    model, loaded = load_model(synth_url)
    rng = np.random.default_rng(0)
    a, b = _line(rng, 6, "ab"), _line(rng, 5, "hi")
    joined, first = primed(a, b)
    assert joined["text"] == "ab hi" and first == 5  # targets 0..4 predict A's rows 1..5
    np.testing.assert_array_equal(joined["offsets"], np.vstack([a["offsets"], b["offsets"][1:]]))  # 6 + 4 rows
    # by hand: the network reads all 10 rows; only the targets of B's 4 real steps count
    x = normalise(joined["offsets"], loaded.meta, model.head.weight)
    x[0] = 0
    chars = torch.as_tensor(loaded_alphabet(loaded).encode(joined["text"]))[None]
    with torch.no_grad():
        yhat, _ = model(x[None, :-1], model.initial_state(1), chars, chars != 0)
        per_step = mixture_nll(split_mixture(yhat, model.M), x[None, 1:])[0]  # (9,)
    assert per_step.shape == (9,)
    expected = per_step[5:].sum().item() / 4
    assert nats_per_point(model, loaded.meta, [joined], [first])[0] == pytest.approx(expected, rel=1e-5)
    alone = nats_per_point(model, loaded.meta, [b])[0]  # unprimed: B's own 4 steps from a fresh state
    assert alone != pytest.approx(expected)


def loaded_alphabet(loaded):
    from seqgen.handwriting.models import meta_alphabet

    return meta_alphabet(loaded.meta)


@pytest.fixture(scope="module")
def writers(tmp_path_factory):
    """memory:// storage with dataset 'forms' (3 writers x 2 lines) and 'singles' (3 writers x 1 line)."""
    from seqgen.handwriting.dataset import preprocess_handwriting

    st = Storage.from_url(f"memory://style-{uuid.uuid4().hex[:8]}")
    for name, lines in (("forms", 2), ("singles", 1)):
        root = tmp_path_factory.mktemp(name)
        _write_iam(root, {f"w{f:02d}-000": ["ol", "zo", "lz"][:lines] for f in range(3)}, seed=3)
        preprocess_handwriting(st, name, str(root), valid_fraction=0.0, use_ray=False)
    return st


def evaluate(st, *args):
    result = runner.invoke(app, ["evaluate", *args, "--style-transfer", "--split", "train", "--storage", st.url])
    return result.exit_code, result.stdout, result.stderr.strip()


def test_by_tenth_averages_each_tenth_of_every_line():
    from seqgen.handwriting.evaluate import _by_tenth

    line = np.arange(20.0)  # tenths (0, 1), (2, 3), ...: means 0.5, 2.5, ..., 18.5
    assert _by_tenth([line]) == pytest.approx([0.5 + 2 * i for i in range(10)])
    short = np.arange(11.0) * 10  # 11 points: the first tenth holds two (0, 10), the others one each
    assert _by_tenth([line, short]) == pytest.approx([(0.5 + 5) / 2] + [(0.5 + 2 * i + 10 * (i + 1)) / 2 for i in range(1, 10)])


def test_style_transfer_report(tiny, writers):
    _, synth, _, _ = tiny
    code, out, err = evaluate(writers, synth, "--dataset", "forms", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert set(report) == {"synthesis", "dataset", "split", "primes", "forms", "nats_per_point", "by_tenth_of_b",
                           "own_beats_unprimed", "own_beats_other", "per_form"}
    assert report["forms"] == 3 and set(report["nats_per_point"]) == {"unprimed", "own_prime", "other_prime"}
    for row in report["per_form"]:
        assert row["line_a"].startswith(row["form"]) and not row["other"].startswith(row["form"])
    assert {k: len(v) for k, v in report["by_tenth_of_b"].items()} == {"unprimed": 10, "own_prime": 10, "other_prime": 10}
    assert 0 <= report["own_beats_unprimed"] <= 3 and 0 <= report["own_beats_other"] <= 3
    assert json.loads(evaluate(writers, synth, "--dataset", "forms", "--json")[1]) == report  # seeded
    code, out, err = evaluate(writers, synth, "--dataset", "forms", "--json", "--drawn")  # primes as drawn
    assert code == 0, err
    drawn = json.loads(out)
    assert drawn["primes"] == "as drawn" and report["primes"] == "as stored"
    assert drawn["nats_per_point"]["unprimed"] == report["nats_per_point"]["unprimed"]  # line B alone is B alone
    assert drawn["nats_per_point"]["own_prime"] != report["nats_per_point"]["own_prime"]  # the primes were rescaled


def test_style_transfer_exit_2_cases(tiny, writers):
    _, synth, reader, _ = tiny
    code, _, err = evaluate(writers, synth, "--dataset", "singles")
    assert code == 2 and "0 form(s) with two or more lines" in err and len(err.splitlines()) == 1
    st = tiny[0]
    meta = json.loads((BUNDLED_HANDWRITING / "meta.json").read_text())
    predictor = save_checkpoint(st, "predictor", "handwriting_prediction", {**meta, "alphabet": None})
    for wrong in (reader, predictor):
        code, _, err = evaluate(writers, wrong, "--dataset", "forms")
        assert code == 2 and "--style-transfer needs a handwriting_synthesis checkpoint" in err, err
