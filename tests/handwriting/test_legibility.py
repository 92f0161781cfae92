"""Legibility: best-of-K choice with an injected scorer, `seqgen evaluate --legibility` end to end on
tiny untrained models (JSON keys, determinism with a seed, exit-2 cases), a recognizer's CER / WER
through `seqgen evaluate`, and the bundled texts' promise (none appears in IAM-OnDB)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from seqgen.catalog import BUNDLED_HANDWRITING, load_model
from seqgen.cli import app
from seqgen.handwriting.legibility import DEFAULT_TEXTS, read_texts, stalled, write_best
from seqgen.storage import Storage
from tests.handwriting.tiny_models import save_checkpoint, tiny  # noqa: F401 - the fixture

runner = CliRunner()


def run(st, *args):
    result = runner.invoke(app, [*args, "--storage", st.url])
    return result.exit_code, result.stdout, result.stderr.strip()


def test_best_of_keeps_the_candidate_read_best_ties_to_the_likelier(tiny):
    st, synth_url, _, _ = tiny
    synth, loaded = load_model(synth_url)
    cers = {0: [0.5, 0.2, 0.2, 0.9], 1: [0.0, 0.3, 0.1, 0.0]}  # per text, per candidate

    def score(results, texts):
        assert texts == ["ab"] * 4 + ["cd"] * 4  # K candidates of every text, one synthesize batch
        flat = cers[0] + cers[1]
        return flat, [f"read {i}" for i in range(len(flat))]

    written = write_best(synth, loaded.meta, None, None, ["ab", "cd"], bias=0.5, seed=3, best_of=4, score=score)
    assert [w.candidates for w in written] == [4, 4]
    first, second = written
    assert first.cer == 0.2 and first.reading in ("read 1", "read 2")
    assert second.cer == 0.0 and second.reading in ("read 4", "read 7")
    # the tie went to the candidate the synthesis network finds likelier
    again = write_best(synth, loaded.meta, None, None, ["ab", "cd"], bias=0.5, seed=3, best_of=4, score=score)
    assert [w.reading for w in again] == [w.reading for w in written]  # seeded: the same choice
    with pytest.raises(ValueError, match="best_of must be between 1 and 8"):
        write_best(synth, loaded.meta, None, None, ["ab"], bias=0.5, seed=3, best_of=9, score=score)


@pytest.mark.slow
def test_legibility_json_is_deterministic_with_a_seed(tiny):
    st, synth, reader, texts = tiny
    args = ["evaluate", synth, "--legibility", "--recognizer", reader, "--texts", str(texts), "--bias", "0,0.75",
            "--bias", "2", "--samples", "2", "--seed", "5", "--json"]  # untrained: every line runs to its limit
    code, out, err = run(st, *args)
    assert code == 0, err
    report = json.loads(out)
    assert set(report) == {"synthesis", "recognizer", "real_cer", "best_of", "texts", "bias"}
    assert report["real_cer"] == 0.25 and report["texts"] == 2 and list(report["bias"]) == ["0", "0.75", "2"]
    for row in report["bias"].values():
        assert set(row) == {"cer", "wer", "stalls", "samples"} and row["samples"] == 4
        assert row["cer"] >= 0 and 0 <= row["stalls"] <= 4
    assert json.loads(run(st, *args)[1]) == report


@pytest.mark.parametrize("case, message", [
    ("empty", "no text lines to write"),
    ("char", "line 2 'Zoo': the synthesis network cannot handle character(s) ['Z']"),
    ("synth-as-recognizer", "--recognizer needs a handwriting_recognition checkpoint"),
    ("recognizer-as-synth", "--legibility needs a handwriting_synthesis checkpoint"),
    ("best-of", "--best-of must be between 1 and 8"),
    ("bias", "--bias takes numbers"),
])
def test_legibility_user_errors_are_one_line_and_exit_2(tiny, tmp_path, case, message):
    st, synth, reader, texts = tiny
    empty, bad = tmp_path / "empty.txt", tmp_path / "bad.txt"
    empty.write_text("\n  \n")
    bad.write_text("ok\nZoo\n")
    args = {"empty": [synth, "--recognizer", reader, "--texts", str(empty)],
            "char": [synth, "--recognizer", reader, "--texts", str(bad)],
            "synth-as-recognizer": [synth, "--recognizer", synth, "--texts", str(texts)],
            "recognizer-as-synth": [reader, "--recognizer", reader, "--texts", str(texts)],
            "best-of": [synth, "--recognizer", reader, "--best-of", "9"],
            "bias": [synth, "--recognizer", reader, "--bias", "high"]}[case]
    code, _, err = run(st, "evaluate", "--legibility", *args)
    assert code == 2 and message in err and len(err.splitlines()) == 1, err


def test_a_recognizer_alphabet_that_misses_a_character_is_named(tiny, tmp_path):
    st, synth, _, texts = tiny
    meta = json.loads((BUNDLED_HANDWRITING / "meta.json").read_text())
    alphabet = json.loads(meta["alphabet"])
    alphabet["chars"] = [c for c in alphabet["chars"] if c != "h"]
    narrow = save_checkpoint(st, "narrow", "handwriting_recognition", {**meta, "alphabet": json.dumps(alphabet)})
    code, _, err = run(st, "evaluate", synth, "--legibility", "--recognizer", narrow, "--texts", str(texts))
    assert code == 2 and "line 2 'hi there': the recognizer cannot handle character(s) ['h']" in err


def test_stalled_means_the_window_stopped_before_the_last_two_characters():
    from seqgen.handwriting.sampling import Result

    phi = np.zeros((3, 5), np.float32)
    phi[-1, 4] = 1
    assert not stalled(Result("abcde", np.zeros((3, 3), np.float32), phi))
    phi[-1] = 0
    phi[-1, 2] = 1
    assert stalled(Result("abcde", np.zeros((3, 3), np.float32), phi))


@pytest.mark.data
def test_bundled_texts_appear_in_no_iam_transcription(shared_data):
    texts = [t.lower() for t in read_texts(DEFAULT_TEXTS)]
    found = []
    for path in (shared_data / "handwriting" / "iam-ondb" / "ascii").rglob("*.txt"):
        body = " ".join(path.read_text(errors="replace").lower().split())
        found += [(t, path.name) for t in texts if t in body]
    assert not found and len(texts) == 20


def test_lines_score_the_same_whichever_dataset_they_were_preprocessed_into(tiny, tmp_path):
    """`seqgen preprocess --handwriting --data-dir DIR` reads a directory in IAM-OnDB's layout; a model
    reads its lines with its own checkpoint's statistics, not the dataset's."""
    import uuid

    from seqgen.data.text import load_manifest
    from seqgen.handwriting.dataset import load_lines
    from seqgen.handwriting.evaluate import evaluate_lines
    from seqgen.handwriting.recognizer import line_steps, read_steps
    from tests.handwriting.test_recognizer import _write_iam

    _, synth_url, reader_url, _ = tiny
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    _write_iam(mine, {"m00-000": ["ol", "zo"]}, seed=4)
    _write_iam(theirs, {"m00-000": ["ol", "zo"]}, seed=4)  # the same two lines ...
    _write_iam(theirs, {"t00-000": ["zzzz", "llll", "oooo"]}, seed=5)  # ... among other writing
    st = Storage.from_url(f"memory://own-norm-{uuid.uuid4().hex[:8]}")
    for name, root in (("mine", mine), ("theirs", theirs)):
        result = runner.invoke(app, ["preprocess", name, "--handwriting", "--data-dir", str(root),
                                     "--valid-fraction", "0", "--storage", st.url])
        assert result.exit_code == 0, result.stderr
    manifests = {n: load_manifest(st, n) for n in ("mine", "theirs")}
    assert manifests["mine"]["offset_std"] != manifests["theirs"]["offset_std"]
    lines = {n: [line for line in load_lines(st, m, "train") if line["form_id"] == "m00-000"]
             for n, m in manifests.items()}
    synth, loaded = load_model(synth_url)
    reader, rec = load_model(reader_url)
    scores = {n: evaluate_lines(synth, ls, loaded.meta).nll for n, ls in lines.items()}
    assert scores["mine"] == pytest.approx(scores["theirs"], rel=1e-6)
    readings = {n: read_steps(reader, rec.meta, line_steps(ls)) for n, ls in lines.items()}
    assert readings["mine"] == readings["theirs"]
    result = runner.invoke(app, ["evaluate", reader_url, "--dataset", "theirs", "--split", "train", "--storage", st.url])
    assert result.exit_code == 0, result.stderr
    row = json.loads(result.stdout)["static"]
    assert set(row) == {"train_cer", "train_wer", "train_lines"} and row["train_lines"] == 5
    result = runner.invoke(app, ["evaluate", reader_url, "--dataset", "theirs", "--split", "train", "--dynamic-lr",
                                 "0.1", "--storage", st.url])
    assert result.exit_code == 2 and "a recognizer cannot honour --dynamic-lr" in result.stderr


def test_write_best_of_from_the_command_line(tiny, tmp_path):
    st, synth, reader, _ = tiny
    outs = []
    for i in range(2):
        out = tmp_path / f"best-{i}.svg"
        code, stdout, err = run(st, "write", "ab", "hi", "--checkpoint", synth, "--best-of", "2", "--recognizer",
                                reader, "--seed", "1", "--out", str(out))
        assert code == 0, err
        assert stdout.count("best of 2") == 2 and "'ab': read as" in stdout
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]  # seeded
    code, _, err = run(st, "write", "ab", "--checkpoint", synth, "--best-of", "9", "--recognizer", reader)
    assert code == 2 and "--best-of must be between 1 and 8" in err
