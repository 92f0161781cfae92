"""Publishing a dataset (seqgen.data.publish): manifest last, a failed build leaves no shard and
the previous version readable, an unchanged fingerprint publishes nothing; through publish itself
and through a text build whose encode pass fails (in-process and in Ray tasks).

The handwriting builder's failing build is in tests/handwriting/test_hw_dataset.py."""

from __future__ import annotations

import uuid

import fsspec
import pytest

from seqgen.data import text
from seqgen.data.publish import fingerprint, publish, shard_name
from seqgen.data.text import DatasetError, TextSpec, load_manifest, load_split, preprocess_text
from seqgen.data.tokenizers import Vocabulary
from seqgen.storage import Storage, join


@pytest.fixture(params=["memory", "local"])
def storage(request, tmp_path):
    if request.param == "local":
        yield Storage.from_url(str(tmp_path / "store"))
        return
    url = f"memory://publish-{uuid.uuid4().hex}"
    yield Storage.from_url(url)
    fs = fsspec.filesystem("memory")
    if fs.exists(url):
        fs.rm(url, recursive=True)


def _files(storage: Storage, name: str) -> list[str]:
    """Every file under the dataset, relative to it."""
    base = storage.dataset_dir(name)
    return sorted(p[len(base) + 1:] for p in storage.fs.find(base)) if storage.exists(base) else []


def _shard_writer(storage: Storage, name: str, data: bytes, fail: bool = False):
    """A build that writes one shard, then fails if asked to."""
    def build(version: str) -> dict:
        path = shard_name(version, "train", 0)
        storage.write_bytes_atomic(join(storage.dataset_dir(name), path), data)
        if fail:
            raise RuntimeError("the build failed after writing a shard")
        return {"kind": "test", "splits": {"train": {"shards": [{"path": path}]}}}
    return build


def test_publish_writes_the_manifest_last_and_keeps_one_version(storage):
    first = publish(storage, "d", "fp1", _shard_writer(storage, "d", b"one"))
    assert first["name"] == "d" and first["fingerprint"] == "fp1" and first["created"]
    assert _files(storage, "d") == ["manifest.json", first["splits"]["train"]["shards"][0]["path"]]
    second = publish(storage, "d", "fp2", _shard_writer(storage, "d", b"two"))
    assert _files(storage, "d") == ["manifest.json", second["splits"]["train"]["shards"][0]["path"]]


def test_an_unchanged_fingerprint_publishes_nothing_unless_forced(storage):
    first = publish(storage, "d", "fp", _shard_writer(storage, "d", b"one"))
    never = _shard_writer(storage, "d", b"", fail=True)  # would fail if it ran
    assert publish(storage, "d", "fp", never) == first
    forced = publish(storage, "d", "fp", _shard_writer(storage, "d", b"again"), force=True)
    assert forced["splits"] != first["splits"] and len(_files(storage, "d")) == 2


def test_a_failed_build_leaves_no_shard_and_the_previous_version(storage):
    first = publish(storage, "d", "fp1", _shard_writer(storage, "d", b"one"))
    before = _files(storage, "d")
    with pytest.raises(RuntimeError, match="build failed"):
        publish(storage, "d", "fp2", _shard_writer(storage, "d", b"two", fail=True))
    assert _files(storage, "d") == before
    assert storage.read_json(join(storage.dataset_dir("d"), "manifest.json")) == first
    with pytest.raises(RuntimeError):  # a first build that fails: no dataset at all
        publish(storage, "e", "fp", _shard_writer(storage, "e", b"x", fail=True))
    assert _files(storage, "e") == []


def test_a_killed_builders_version_is_removed_by_the_next_publish(storage):
    orphan = join(storage.dataset_dir("d"), shard_name("v-19990101-000000-dead00", "train", 0))
    storage.write_bytes_atomic(orphan, b"left by a builder that was killed")
    manifest = publish(storage, "d", "fp", _shard_writer(storage, "d", b"one"))
    assert _files(storage, "d") == ["manifest.json", manifest["splits"]["train"]["shards"][0]["path"]]


def test_fingerprint_depends_on_content_not_order_of_keys():
    assert fingerprint({"a": 1, "b": 2}, ["x"]) == fingerprint({"b": 2, "a": 1}, ["x"])
    assert fingerprint({"a": 1}, ["x"]) != fingerprint({"a": 1}, ["y"])


# -- a text build whose encode pass fails ---------------------------------------------------------
TEXT = "Before we proceed any further, hear me speak.\n" * 60


def _input_that_shrinks_before_encoding(monkeypatch, url: str) -> None:
    """The input loses its second half between the count pass and the encode pass (the driver
    fingerprints in between): the chunks past the cut fail in their encode tasks, after the
    tasks before them have written their shards."""
    real = text.fingerprint

    def fingerprint_then_truncate(*parts):
        with fsspec.open(url, "rb") as f:
            data = f.read()
        with fsspec.open(url, "wb") as f:
            f.write(data[: len(data) // 2])
        return real(*parts)

    monkeypatch.setattr(text, "fingerprint", fingerprint_then_truncate)


def _failing_text_build(storage: Storage, url: str, monkeypatch, use_ray: bool) -> None:
    with fsspec.open(url, "wb") as f:
        f.write(TEXT.encode())
    spec = TextSpec("char", {"train": [url]}, chunk_bytes=256, block_tokens=64)
    first = preprocess_text(storage, "d", spec, use_ray=use_ray)
    before = _files(storage, "d")
    with fsspec.open(url, "wb") as f:  # a changed input: a rebuild, which fails
        f.write(TEXT.upper().encode())
    _input_that_shrinks_before_encoding(monkeypatch, url)
    with pytest.raises(DatasetError, match="became shorter"):
        preprocess_text(storage, "d", spec, use_ray=use_ray)
    assert _files(storage, "d") == before  # no partial shard, the old manifest
    assert load_manifest(storage, "d") == first
    assert Vocabulary.from_json(first["vocab"]).decode(load_split(storage, first, "train")) == TEXT


def test_a_failed_text_build_leaves_no_shard_in_process(storage, tmp_path, monkeypatch):
    _failing_text_build(storage, str(tmp_path / "corpus.txt"), monkeypatch, use_ray=False)


def test_a_failed_text_build_leaves_no_shard_in_ray_tasks(ray_session, tmp_path, monkeypatch):
    """Ray tasks still running when one fails must not write after the clean-up."""
    storage = Storage.from_url(str(tmp_path / "store"))
    _failing_text_build(storage, str(tmp_path / "corpus.txt"), monkeypatch, use_ray=True)
