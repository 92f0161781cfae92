"""The shards text and handwriting datasets share: writing them, per-rank slices, verified reads.

A dataset on storage is ``<dataset>/manifest.json`` (written last) plus the Parquet shards of one
version, ``<dataset>/<version>/<split>/part-NNNNN.parquet`` (``seqgen.data.publish`` makes them
visible). Each shard's manifest entry is
``{"path": <relative to the dataset>, <count>: n, "sha256": <hex of the file's bytes>}``; the hash
is checked whenever the shard is read (``read_shard``), or streamed through once before a lazy
reader uses its row groups (``verify_shard``, ``seqgen.data.streams``), so a damaged or swapped
file is an error naming it, never silently different data. Manifests written before hashes existed
have no ``sha256`` and load as before. ``ShardWriter`` writes a shard a row group at a time,
hashing as it goes.
"""

from __future__ import annotations

import hashlib
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from seqgen.storage import Storage


class DatasetError(ValueError):
    """Bad input for preprocessing (nothing was written), or a dataset on storage that cannot be used."""


def split_info(manifest: dict, split: str) -> dict:
    info = manifest["splits"].get(split)
    if info is None:
        raise KeyError(f"dataset {manifest['name']!r} has no {split!r} split (has {sorted(manifest['splits'])})")
    return info


def rank_share(total: int, rank: int, world: int) -> tuple[int, int]:
    """Worker ``rank`` of ``world`` owns the contiguous items [total*rank/world, total*(rank+1)/world)."""
    return total * rank // world, total * (rank + 1) // world


def rank_slices(shards: list[dict], count: str, total: int, rank: int, world: int) -> Iterator[tuple[dict, int, int]]:
    """(shard, start, stop) for every shard that overlaps worker ``rank``'s share (`rank_share`),
    start/stop inside the shard."""
    lo, hi = rank_share(total, rank, world)
    pos = 0
    for shard in shards:
        s_lo, s_hi = pos, pos + shard[count]
        pos = s_hi
        if s_hi <= lo or s_lo >= hi or not shard[count]:
            continue
        yield shard, max(lo - s_lo, 0), min(hi, s_hi) - s_lo


def shard_path(storage: Storage, manifest: dict, shard: dict) -> str:
    return f"{storage.dataset_dir(manifest['name'])}/{shard['path']}"


def _damaged(storage: Storage, manifest: dict, path: str, why: str) -> DatasetError:
    return DatasetError(f"dataset {manifest['name']!r} is damaged: shard {storage.url_of(path)} {why}; "
                        f"rebuild it with `seqgen preprocess {manifest['name']} --force`")


def _check_hash(storage: Storage, manifest: dict, shard: dict, path: str, got: str) -> None:
    expected = shard.get("sha256")
    if expected is not None and got != expected:
        raise _damaged(storage, manifest, path, f"has sha256 {got[:16]}..., the manifest says {expected[:16]}...")


def read_shard(storage: Storage, manifest: dict, shard: dict, columns: list[str] | None = None) -> pa.Table:
    """One shard as a table, after checking its sha256 against the manifest (when it has one)."""
    path = shard_path(storage, manifest, shard)
    try:
        data = storage.fs.cat_file(path)
    except FileNotFoundError:
        raise _damaged(storage, manifest, path, "is missing") from None
    _check_hash(storage, manifest, shard, path, hashlib.sha256(data).hexdigest())
    return pq.read_table(pa.BufferReader(data), columns=columns)


def verify_shard(storage: Storage, manifest: dict, shard: dict, block: int = 1 << 20) -> None:
    """`read_shard`'s check without holding the file: its sha256 computed over ``block``-sized reads."""
    path = shard_path(storage, manifest, shard)
    digest = hashlib.sha256()
    try:
        with storage.fs.open(path, "rb", block_size=block) as f:
            while data := f.read(block):
                digest.update(data)
    except FileNotFoundError:
        raise _damaged(storage, manifest, path, "is missing") from None
    _check_hash(storage, manifest, shard, path, digest.hexdigest())


class ShardWriter:
    """A Parquet shard written as it is produced (memory: one row group), hashed on the way out.

    ``write(table)`` appends ``table`` as one row group; ``close()`` returns the sha256 of the
    file's bytes for the manifest. The file goes straight to its final name: a dataset becomes
    visible only through its manifest, written after every shard (see the module docstring)."""

    def __init__(self, url: str, schema: pa.Schema, **options):
        """``options``: of ``pyarrow.parquet.ParquetWriter`` (encoding, compression)."""
        fs, path = url_to_fs(url)
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self._file = fs.open(path, "wb")
        self._digest = hashlib.sha256()
        self._writer = pq.ParquetWriter(_Hashing(self._file, self._digest), schema, **options)

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))

    def close(self) -> str:
        self._writer.close()
        self._file.close()
        return self._digest.hexdigest()


class _Hashing:
    """A write-only file that hashes what passes through it to ``file`` (for `ShardWriter`)."""

    closed = False

    def __init__(self, file, digest):
        self.file, self.digest, self.pos = file, digest, 0

    def write(self, data) -> int:
        self.digest.update(data)
        self.pos += len(data)
        return self.file.write(data)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def close(self) -> None:  # ShardWriter closes the real file itself
        pass
