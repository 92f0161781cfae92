"""What text and handwriting datasets share: versions, fingerprints, per-rank slices, verified shards.

A dataset on storage is ``<dataset>/manifest.json`` (written last) plus the Parquet shards of one
version, ``<dataset>/<version>/<split>/part-NNNNN.parquet``. Each shard's manifest entry is
``{"path": <relative to the dataset>, <count>: n, "sha256": <hex of the file's bytes>}``; the hash is
checked whenever the shard is read, so a damaged or swapped file is an error naming it, never
silently different data. Manifests written before hashes existed have no ``sha256`` and load as before.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from seqgen.storage import Storage


class DatasetError(ValueError):
    """Bad input for preprocessing (nothing was written), or a dataset on storage that cannot be used."""


def new_version() -> str:
    """A fresh version directory name: sorts by time, unique across concurrent builders."""
    return f"v-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def fingerprint(*parts) -> str:
    """sha256 of JSON-serialisable parts: what decides whether a rebuild is needed."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def remove_old_versions(storage: Storage, name: str, keep: str) -> None:
    """Delete every version directory of dataset ``name`` but ``keep`` (after its manifest is written)."""
    fs = storage.fs
    for entry in fs.ls(storage.dataset_dir(name), detail=False):
        leaf = entry.rstrip("/").rsplit("/", 1)[-1]
        if leaf.startswith("v-") and leaf != keep:
            fs.rm(entry, recursive=True)


def split_info(manifest: dict, split: str) -> dict:
    info = manifest["splits"].get(split)
    if info is None:
        raise KeyError(f"dataset {manifest['name']!r} has no {split!r} split (has {sorted(manifest['splits'])})")
    return info


def rank_slices(shards: list[dict], count: str, total: int, rank: int, world: int) -> Iterator[tuple[dict, int, int]]:
    """Worker ``rank`` of ``world`` owns the contiguous items [total*rank/world, total*(rank+1)/world).
    Yields (shard, start, stop) for every shard that overlaps that share, start/stop inside the shard."""
    lo, hi = total * rank // world, total * (rank + 1) // world
    pos = 0
    for shard in shards:
        s_lo, s_hi = pos, pos + shard[count]
        pos = s_hi
        if s_hi <= lo or s_lo >= hi or not shard[count]:
            continue
        yield shard, max(lo - s_lo, 0), min(hi, s_hi) - s_lo


def read_shard(storage: Storage, manifest: dict, shard: dict, columns: list[str] | None = None) -> pa.Table:
    """One shard as a table, after checking its sha256 against the manifest (when it has one)."""
    path = f"{storage.dataset_dir(manifest['name'])}/{shard['path']}"
    try:
        data = storage.fs.cat_file(path)
    except FileNotFoundError:
        raise DatasetError(f"dataset {manifest['name']!r} is damaged: shard {storage.url_of(path)} is missing; "
                           f"rebuild it with `seqgen preprocess {manifest['name']} --force`") from None
    expected = shard.get("sha256")
    if expected is not None and (got := hashlib.sha256(data).hexdigest()) != expected:
        raise DatasetError(f"dataset {manifest['name']!r} is damaged: shard {storage.url_of(path)} has sha256 "
                           f"{got[:16]}..., the manifest says {expected[:16]}...; "
                           f"rebuild it with `seqgen preprocess {manifest['name']} --force`")
    return pq.read_table(pa.BufferReader(data), columns=columns)
