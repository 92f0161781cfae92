"""Lazy token reading (seqgen.data.streams): exact ids, only the row groups a read overlaps,
bounded cache, verified shards, and Streams = batchify."""

from __future__ import annotations

import uuid

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from seqgen.data.shards import DatasetError
from seqgen.data.streams import Streams, open_split
from seqgen.data.text import TextSpec, load_split, preprocess_text
from seqgen.evaluate import batchify
from seqgen.storage import Storage

TEXT = "".join(f"line {i}: the quick brown fox — ünïcödé {i * i}\n" for i in range(3000))  # ~150 KB


@pytest.fixture
def built():
    """A char dataset of many shards (chunks of 16 KB), each of many row groups (rows of 1000 ids)."""
    root = f"memory://streams-{uuid.uuid4().hex}"
    with fsspec.open(f"{root}/in/c.txt", "wb") as f:
        f.write(TEXT.encode())
    storage = Storage.from_url(f"{root}/store")
    spec = TextSpec("char", {"train": [f"{root}/in/c.txt"]}, valid_fraction=0.1, chunk_bytes=16 << 10,
                    block_tokens=1000)
    yield storage, preprocess_text(storage, "d", spec)
    fsspec.filesystem("memory").rm(root, recursive=True)


def _row_groups(storage, manifest, split):
    base = storage.dataset_dir(manifest["name"])
    return [pq.ParquetFile(storage.fs.open(f"{base}/{s['path']}", "rb")).metadata.num_row_groups
            for s in manifest["splits"][split]["shards"]]


def test_shards_have_one_row_group_per_row(built):
    storage, m = built
    shards = m["splits"]["train"]["shards"]
    assert len(shards) > 5
    assert _row_groups(storage, m, "train") == [-(-s["tokens"] // 1000) for s in shards]


def test_reads_equal_the_loaded_split_and_touch_only_their_row_groups(built):
    storage, m = built
    whole = load_split(storage, m, "train")
    tokens = open_split(storage, m, "train")
    assert len(tokens) == len(whole) and tokens.read().dtype == np.uint8  # < 256 symbols: one byte per id
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = int(rng.integers(0, len(whole)))
        b = int(rng.integers(a, min(a + 5000, len(whole)) + 1))
        np.testing.assert_array_equal(tokens.read(a, b), whole[a:b])
    view = tokens[1234:5678]
    assert len(view) == 4444
    np.testing.assert_array_equal(view.read(10, 20), whole[1244:1254])
    np.testing.assert_array_equal(view[100:][:50].read(), whole[1334:1384])
    with pytest.raises(IndexError):
        view.read(0, 4445)
    fresh = open_split(storage, m, "train")
    fresh.read(2500, 2600)  # inside the third row (row group) of the first shard
    assert fresh.reader.groups_read == 1
    fresh.read(999, 1001)  # straddles rows 1 and 2
    assert fresh.reader.groups_read == 3


def test_rank_shares_concatenate_to_the_split(built):
    storage, m = built
    whole = load_split(storage, m, "train")
    for world in (2, 3):
        parts = [open_split(storage, m, "train", r, world).read() for r in range(world)]
        np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_cache_stays_within_its_budget(built):
    storage, m = built
    tokens = open_split(storage, m, "train", cache_bytes=5000)  # 5 rows of 1000 one-byte ids
    for a in range(0, len(tokens) - 100, 700):
        tokens.read(a, a + 100)
        assert tokens.reader.cached <= 5000
    total_rows = sum(-(-s["tokens"] // 1000) for s in m["splits"]["train"]["shards"])
    assert tokens.reader.groups_read == total_rows  # a forward scan reads each row group once


def test_streams_equal_batchify_and_read_each_row_group_once(built):
    storage, m = built
    ids = load_split(storage, m, "train")
    expected = batchify(ids, 7)
    for source in (ids, open_split(storage, m, "train", cache_bytes=0)):  # no cache beyond the rows' own
        rows = Streams(source, 7)
        assert rows.shape == tuple(expected.shape)
        for start in range(0, rows.length, 97):
            got = rows.window(start, start + 98)
            assert got.dtype == torch.int64
            torch.testing.assert_close(got, expected[:, start : start + 98])
    reader = source.reader
    rows_per_stream = rows.length / 1000
    assert reader.groups_read <= 7 * (rows_per_stream + 2)  # each stream reads its own region once
    assert len(reader.cache) <= 2 * 7 + 2


def test_damaged_shard_is_an_error_on_first_touch(built):
    storage, m = built
    shard = m["splits"]["train"]["shards"][3]
    path = f"{storage.dataset_dir('d')}/{shard['path']}"
    tokens = open_split(storage, m, "train")
    tokens.read(0, 100)  # shard 0: fine
    data = bytearray(storage.fs.cat_file(path))
    data[len(data) // 2] ^= 0xFF
    storage.fs.pipe_file(path, bytes(data))
    start = sum(s["tokens"] for s in m["splits"]["train"]["shards"][:3])
    with pytest.raises(DatasetError, match="is damaged: shard .*part-00003.parquet has sha256"):
        tokens.read(start, start + 10)
    storage.fs.rm(path)
    with pytest.raises(DatasetError, match="part-00003.parquet is missing"):
        open_split(storage, m, "train").read(start, start + 10)


def test_shards_of_the_older_layout_still_read(built):
    """Datasets written before one row group per row: a shard is one row group, read whole."""
    import hashlib

    storage, m = built
    whole = load_split(storage, m, "train")
    for shard in m["splits"]["train"]["shards"]:
        path = f"{storage.dataset_dir('d')}/{shard['path']}"
        table = pq.read_table(storage.fs.open(path, "rb"))
        with storage.fs.open(path, "wb") as f:
            pq.write_table(table, f)  # pyarrow's default: one row group
        shard["sha256"] = hashlib.sha256(storage.fs.cat_file(path)).hexdigest()
    assert set(_row_groups(storage, m, "train")) == {1}
    tokens = open_split(storage, m, "train")
    np.testing.assert_array_equal(tokens.read(5000, 40000), whole[5000:40000])
