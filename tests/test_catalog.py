"""seqgen.catalog: listing runs and datasets on a storage root, finding and loading checkpoints
from what a user typed, inspecting them (on a local directory and memory://)."""

from __future__ import annotations

import math
import os

import pytest

from seqgen import checkpoint as ckpt
from seqgen.catalog import (CheckpointError, best_eval, bundled_handwriting, evaluation_dataset, find_checkpoint,
                            inspect_checkpoint, list_datasets, list_runs, load_model)
from seqgen.storage import Storage, join
from tiny_storage import handwriting_checkpoint, handwriting_dataset, new_storage, text_checkpoint, text_dataset


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("catalog")
    st = Storage.from_url(str(tmp / "store"))
    manifest = text_dataset(st, tmp)
    # two checkpoints of one run: the earlier one is the better
    text_checkpoint(st, manifest, run="two", step=2, evals=[{"step": 2, "score": 2.0, "valid_loss": 2.0, "valid_bpc": 2.0}])
    text_checkpoint(st, manifest, run="two", step=4, evals=[{"step": 2, "score": 2.0, "valid_loss": 2.0, "valid_bpc": 2.0},
                                                            {"step": 4, "score": 3.0, "valid_loss": 3.0, "valid_bpc": 3.0}])
    st.write_json_atomic(join(st.run_dir("empty"), "config.json"), {"model": {"kind": "text"}, "train": {"max_steps": 5}})
    return st, tmp


def test_empty_storage_lists_nothing():
    st = new_storage("empty")
    assert list_runs(st) == [] and list_datasets(st) == []


def test_runs_summarise_the_newest_checkpoint(local):
    st, _ = local
    runs = {r.name: r for r in list_runs(st)}
    assert set(runs) == {"two", "empty"}
    two = runs["two"]
    assert (two.steps, two.max_steps, two.checkpoints) == (4, 10, 2)
    assert (two.best_metric, two.best, two.best_step) == ("valid_bpc", 2.0, 2)
    assert two.updated.endswith("Z") and two.url == st.url_of(st.run_dir("two"))
    empty = runs["empty"]
    assert (empty.steps, empty.checkpoints, empty.best, empty.kind) == (0, 0, None, "text")


def test_best_eval_units_and_fallbacks():
    evals = [{"step": 1, "valid_loss": 3.0, "valid_bpc": 1.5, "train_loss": 9.0},
             {"step": 2, "valid_loss": 2.0, "valid_bpc": math.nan}]
    assert best_eval(evals, "text") == ("valid_bpc", 1.5, 1)
    assert best_eval(evals, "handwriting_synthesis") == ("valid_loss", 2.0, 2)
    assert best_eval([{"step": 3, "train_loss": 4.0}], "text") == ("train_loss", 4.0, 3)
    assert best_eval([], "text") == ("", None, None)


def test_datasets_and_an_unreadable_manifest(local):
    st, tmp = local
    os.makedirs(tmp / "store" / "datasets" / "broken")
    (tmp / "store" / "datasets" / "broken" / "manifest.json").write_text("{not json")
    os.makedirs(tmp / "store" / "datasets" / "half-written")  # no manifest yet: not a dataset
    found = {d.name: d for d in list_datasets(st)}
    assert set(found) == {"tiny", "broken"}
    assert found["tiny"].kind == "char" and found["tiny"].symbols == 58 and found["tiny"].unit == "tokens"
    assert sum(found["tiny"].splits.values()) == 20_000  # every byte of the 20 kB ASCII text is a token
    assert found["broken"].kind == "unreadable manifest"


def test_find_checkpoint_from_what_users_type(local, tmp_path):
    st, _ = local
    run_url = st.url_of(st.run_dir("two"))
    first, second = ckpt.list_checkpoints(run_url)
    assert find_checkpoint(st, "two") == first  # the best, not the newest
    assert find_checkpoint(st, run_url) == first
    assert find_checkpoint(st, second) == second
    with pytest.raises(CheckpointError, match="run 'empty' has no complete checkpoint yet"):
        find_checkpoint(st, "empty")
    with pytest.raises(CheckpointError, match="no run 'ghost'"):
        find_checkpoint(st, "ghost")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(CheckpointError, match="is a file, not a checkpoint directory"):
        find_checkpoint(st, str(tmp_path / "f.txt"))
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        find_checkpoint(st, str(tmp_path))


def test_inspect_counts_parameters_and_file_sizes(local):
    st, _ = local
    url = find_checkpoint(st, "two")
    info = inspect_checkpoint(url)
    model, _ = load_model(url)
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    for name, size in info["files"].items():
        assert size == os.path.getsize(os.path.join(url, name))
    assert info["total_bytes"] == sum(info["files"].values()) and info["step"] == 2
    assert info["vocabulary"]["kind"] == "char" and "\n" in info["vocabulary"]["symbols"]


def test_inspect_handwriting_on_memory_storage(tmp_path):
    st = new_storage("catalog-hw")
    hw = handwriting_dataset(st, tmp_path)
    url = handwriting_checkpoint(st, hw, "synthesis")
    info = inspect_checkpoint(url)
    assert info["kind"] == "handwriting_synthesis" and info["dataset"] == "hw"
    assert info["alphabet"]["size"] == len(info["alphabet"]["chars"]) + 1  # + the END class
    assert info["offset_stats"]["std"] == hw["offset_std"]
    assert list_datasets(st)[0].unit == "lines"


def test_evaluation_dataset_is_one_the_model_can_read(tmp_path):
    """Every check before evaluating: the dataset's kind, its split, and the symbols the model reads."""
    from seqgen.handwriting.iam import Alphabet

    st = new_storage("catalog-eval")
    text, hw = text_dataset(st, tmp_path), handwriting_dataset(st, tmp_path)
    text_dataset(st, tmp_path, name="short", nbytes=300)  # fewer symbols: another vocabulary
    words = ckpt.load(text_checkpoint(st, text, run="words"))
    scribe = ckpt.load(handwriting_checkpoint(st, hw, "synthesis"))
    assert evaluation_dataset(st, words, None, "test")["name"] == "tiny"  # the one it was trained on
    assert evaluation_dataset(st, scribe, "hw", "valid")["name"] == "hw"
    with pytest.raises(ValueError, match="is a text model but dataset 'hw' is a handwriting dataset"):
        evaluation_dataset(st, words, "hw", "test")
    with pytest.raises(ValueError, match="dataset 'tiny' has no 'dev' split .*pass --split"):
        evaluation_dataset(st, words, None, "dev")
    with pytest.raises(ValueError, match="dataset 'short' has another vocabulary"):
        evaluation_dataset(st, words, "short", "test")
    chars = Alphabet.from_json(hw["alphabet"]).chars
    scribe.meta["alphabet"] = Alphabet([*chars, "@"]).to_json()  # a wider alphabet reads the dataset's lines
    assert evaluation_dataset(st, scribe, None, "valid")["name"] == "hw"
    scribe.meta["alphabet"] = Alphabet(chars[:-1]).to_json()
    with pytest.raises(ValueError, match=f"dataset 'hw' has characters that checkpoint .* cannot read or write: "
                                         rf"\['{chars[-1]}'\]"):
        evaluation_dataset(st, scribe, None, "valid")
    with pytest.raises(FileNotFoundError, match="dataset 'nope' not found"):
        evaluation_dataset(st, words, "nope", "test")


def test_the_bundled_handwriting_model(monkeypatch, tmp_path):
    import seqgen.catalog

    assert load_model(bundled_handwriting())[1].config.model.kind == "handwriting_synthesis"
    monkeypatch.setattr(seqgen.catalog, "BUNDLED_HANDWRITING", tmp_path)
    with pytest.raises(CheckpointError, match="no bundled handwriting model in this install"):
        bundled_handwriting()
