"""preprocess_text in-process (no Ray): splits, idempotence, versions, errors, Parquet output, PTB."""

from __future__ import annotations

import uuid

import fsspec
import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest

from seqgen.data.text import (
    DatasetError,
    TextSpec,
    chars_per_token,
    load_manifest,
    load_split,
    plan_chunks,
    preprocess_text,
)
from seqgen.data.tokenizers import Vocabulary
from seqgen.storage import Storage

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak — ünïcödé.\n\n" * 40)


@pytest.fixture
def mem():
    """A fresh memory:// root (the memory file system is shared by the whole process)."""
    root = f"memory://pre-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _write(url: str, data: bytes) -> str:
    with fsspec.open(url, "wb") as f:
        f.write(data)
    return url


def _versions(storage: Storage, name: str) -> list[str]:
    entries = storage.fs.ls(storage.dataset_dir(name), detail=False)
    return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries if e.rstrip("/").rsplit("/", 1)[-1].startswith("v-"))


def _decode(storage, manifest, split) -> str:
    return Vocabulary.from_json(manifest["vocab"]).decode(load_split(storage, manifest, split))


@pytest.mark.parametrize("fractions", [(0.1, 0.0), (0.13, 0.07)])
@pytest.mark.parametrize("chunk_bytes", [97, 1 << 20])
def test_tail_fraction_splits_cover_the_file(mem, fractions, chunk_bytes):
    url = _write(f"{mem}/in/corpus.txt", TEXT.encode())
    storage = Storage.from_url(f"{mem}/store")
    assert not storage.shared_across_processes  # memory:// runs in-process by default
    valid_fraction, test_fraction = fractions
    spec = TextSpec("char", {"train": [url]}, valid_fraction=valid_fraction, test_fraction=test_fraction,
                    chunk_bytes=chunk_bytes)
    m = preprocess_text(storage, "shakes", spec)
    splits = ["train", "valid"] + (["test"] if test_fraction else [])
    assert sorted(m["splits"]) == sorted(splits)
    parts = [_decode(storage, m, s) for s in splits]
    assert "".join(parts) == TEXT  # every byte owned exactly once, in order
    size = len(TEXT.encode())
    assert abs(len(parts[1].encode()) - valid_fraction * size) < 4  # tail cut snapped to a char boundary
    assert sum(m["splits"][s]["tokens"] for s in splits) == len(TEXT)
    assert sum(m["splits"][s]["chars"] for s in splits) == len(TEXT)
    for s in splits:
        assert m["splits"][s]["tokens"] == sum(sh["tokens"] for sh in m["splits"][s]["shards"])
    assert load_manifest(storage, "shakes") == m


def test_tail_fractions_validated(mem):
    url = _write(f"{mem}/in/c.txt", b"abc")
    for spec in [TextSpec("char", {"train": [url]}, valid_fraction=0.6, test_fraction=0.5),
                 TextSpec("char", {"train": [url], "valid": [url]}, valid_fraction=0.1),
                 TextSpec("char", {"valid": [url]}),
                 TextSpec("char", {"train": [url], "dev": [url]})]:
        with pytest.raises(DatasetError):
            plan_chunks(spec)


def test_rerun_is_idempotent(mem):
    url = _write(f"{mem}/in/c.txt", TEXT.encode())
    storage = Storage.from_url(f"{mem}/store")
    spec = TextSpec("char", {"train": [url]}, valid_fraction=0.1, chunk_bytes=500)
    first = preprocess_text(storage, "d", spec)
    versions = _versions(storage, "d")
    assert len(versions) == 1 and first["splits"]["train"]["shards"][0]["path"].startswith(versions[0] + "/")
    second = preprocess_text(storage, "d", spec)
    assert second == first
    assert _versions(storage, "d") == versions  # no new version directory


def test_changed_input_makes_new_version(mem):
    url = _write(f"{mem}/in/c.txt", b"hello\n")
    storage = Storage.from_url(f"{mem}/store")
    first = preprocess_text(storage, "d", TextSpec("char", {"train": [url]}))
    _write(url, b"hello there\n")
    second = preprocess_text(storage, "d", TextSpec("char", {"train": [url]}))
    assert second["fingerprint"] != first["fingerprint"]
    assert _decode(storage, second, "train") == "hello there\n"
    assert len(_versions(storage, "d")) == 1


def test_force_makes_new_version_and_removes_old(mem):
    url = _write(f"{mem}/in/c.txt", TEXT.encode())
    storage = Storage.from_url(f"{mem}/store")
    spec = TextSpec("char", {"train": [url]})
    first = preprocess_text(storage, "d", spec)
    (old,) = _versions(storage, "d")
    forced = preprocess_text(storage, "d", spec, force=True)
    (new,) = _versions(storage, "d")
    assert new != old
    assert forced["splits"]["train"]["shards"][0]["path"].startswith(new + "/")
    assert forced["fingerprint"] == first["fingerprint"]
    assert not storage.exists(f"{storage.dataset_dir('d')}/{old}")
    assert _decode(storage, forced, "train") == TEXT


@pytest.mark.parametrize("case", ["missing", "empty", "invalid_utf8"])
def test_bad_input_writes_nothing(mem, case):
    storage = Storage.from_url(f"{mem}/store")
    url = f"{mem}/in/x.txt"
    if case == "empty":
        _write(url, b"")
    elif case == "invalid_utf8":
        _write(url, b"good text\n" * 50 + b"\xff bad")
    message = {"missing": "input file not found", "empty": "input file is empty",
               "invalid_utf8": "invalid UTF-8 at byte offset 500 "}[case]
    with pytest.raises(DatasetError, match=message):
        preprocess_text(storage, "x", TextSpec("char", {"train": [url]}, chunk_bytes=64))
    assert not storage.exists(storage.dataset_dir("x"))
    assert not storage.exists(f"{storage.dataset_dir('x')}/manifest.json")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_manifest(storage, "x")


def test_bad_dataset_name_rejected(mem):
    url = _write(f"{mem}/in/c.txt", b"abc")
    storage = Storage.from_url(f"{mem}/store")
    with pytest.raises(ValueError, match="invalid dataset name"):
        preprocess_text(storage, "../escape", TextSpec("char", {"train": [url]}))


def test_output_readable_by_pyarrow_and_pandas(tmp_path):
    src = tmp_path / "corpus.txt"
    src.write_text(TEXT, encoding="utf-8")
    storage = Storage.from_url(str(tmp_path / "store"))
    spec = TextSpec("char", {"train": [str(src)]}, valid_fraction=0.2, chunk_bytes=700, block_tokens=50)
    m = preprocess_text(storage, "local", spec, use_ray=False)
    vocab = Vocabulary.from_json(m["vocab"])
    version = m["splits"]["train"]["shards"][0]["path"].split("/")[0]
    base = tmp_path / "store" / "datasets" / "local" / version
    assert (tmp_path / "store" / "datasets" / "local" / "manifest.json").is_file()
    texts = {}
    for split in ("train", "valid"):
        table = pads.dataset(str(base / split), format="parquet").to_table()
        assert table.column_names == ["tokens"]
        # shard files sort by chunk index, so the dataset order is the file order
        ids = table.column("tokens").combine_chunks().flatten().to_numpy()
        assert ids.dtype == np.int32
        np.testing.assert_array_equal(ids, load_split(storage, m, split))
        frames = [pd.read_parquet(base / sh["path"].split("/", 1)[1]) for sh in m["splits"][split]["shards"]]
        df = pd.concat(frames, ignore_index=True)
        assert list(df.columns) == ["tokens"] and all(len(row) <= 50 for row in df["tokens"])
        np.testing.assert_array_equal(np.concatenate(list(df["tokens"])), ids)
        texts[split] = vocab.decode(ids)
    assert texts["train"] + texts["valid"] == TEXT
    assert not list(tmp_path.rglob(".tmp-*"))


def test_load_split_shares(mem):
    url = _write(f"{mem}/in/c.txt", TEXT.encode())
    storage = Storage.from_url(f"{mem}/store")
    m = preprocess_text(storage, "d", TextSpec("char", {"train": [url]}, chunk_bytes=300, block_tokens=37))
    whole = load_split(storage, m, "train")
    assert len(whole) == m["splits"]["train"]["tokens"] == len(TEXT)
    for world in (2, 3, 7):
        parts = [load_split(storage, m, "train", r, world) for r in range(world)]
        np.testing.assert_array_equal(np.concatenate(parts), whole)
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(KeyError, match="no 'test' split"):
        load_split(storage, m, "test")


# ---------------------------------------------------------------------------------------------
# PTB presets (the shared data directory), built once per session (``ptb_presets``, tests/conftest.py)
@pytest.mark.data
def test_ptb_word_preset(ptb_presets):
    storage, built = ptb_presets
    m = built["ptb-word"]
    assert {s: m["splits"][s]["tokens"] for s in ("train", "valid", "test")} == {
        "train": 929_589, "valid": 73_760, "test": 82_430}
    assert m["vocab_size"] == 10_000
    assert m["vocab"]["unk"] == "<unk>" and m["vocab"]["symbols"][0] == "<eos>"
    valid = load_split(storage, m, "valid")
    assert len(valid) == 73_760 and valid.max() < 10_000
    assert 5.0 < chars_per_token(m) < 6.0  # ~5.5 characters (with the space) per word


@pytest.mark.data
def test_ptb_char_preset(ptb_presets):
    m = ptb_presets[1]["ptb-char"]
    assert m["vocab_size"] == 50
    assert "<eos>" in m["vocab"]["symbols"] and "_" in m["vocab"]["symbols"]
    assert all(m["splits"][s]["tokens"] > 0 for s in ("train", "valid", "test"))
    # each symbol is one character: bits per token are bits per character (the raw file spaces them)
    assert chars_per_token(m) == 1.0
