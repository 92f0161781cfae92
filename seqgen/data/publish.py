"""Publishing a dataset: the one way text and handwriting datasets come to exist on storage.

    <dataset>/manifest.json                       written last: a dataset exists iff this exists
    <dataset>/<version>/<split>/part-NNNNN.parquet the shards of the version the manifest names

``publish`` runs a kind's ``build`` into a fresh version directory and makes it visible by writing
the manifest (atomically) only after every shard is written, so a reader sees the previous version
or the new one, never part of one. A build that fails leaves nothing behind: its version directory
is removed and the previous manifest and shards stay as they were. A builder killed outright (no
chance to clean up) leaves an unnamed version directory, which the next publish removes with the
other old versions. An unchanged fingerprint (same settings, same input) publishes nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Callable

from seqgen.storage import Storage, join

MANIFEST = "manifest.json"
VERSION_PREFIX = "v-"


def fingerprint(*parts) -> str:
    """sha256 of JSON-serialisable parts: what decides whether a rebuild is needed."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def shard_name(version: str, split: str, index: int) -> str:
    """Where shard ``index`` of ``split`` goes, relative to the dataset (as its manifest lists it)."""
    return f"{version}/{split}/part-{index:05d}.parquet"


def publish(storage: Storage, name: str, fp: str, build: Callable[[str], dict], force: bool = False) -> dict:
    """Dataset ``name``'s manifest: the existing one if its fingerprint is ``fp`` (unless ``force``),
    else a new version built by ``build(version)``.

    ``build`` writes the version's shards (at ``shard_name(version, ...)``) and returns the
    manifest's kind-specific fields; ``publish`` adds ``name``, ``fingerprint`` and ``created``,
    writes the manifest, then removes the older versions. If ``build`` raises, every file under
    the new version is removed and the error goes on to the caller; the dataset is unchanged.
    """
    manifest_path = join(storage.dataset_dir(name), MANIFEST)
    if not force and storage.exists(manifest_path):
        old = storage.read_json(manifest_path)
        if old.get("fingerprint") == fp:
            return old
    version = _new_version()
    try:
        manifest = {**build(version), "name": name, "fingerprint": fp, "created": _now()}
    except BaseException:  # Ctrl-C included: no partial shard outlives a build
        _remove(storage, join(storage.dataset_dir(name), version))
        raise
    storage.write_json_atomic(manifest_path, manifest)  # the dataset becomes visible here
    _remove_old_versions(storage, name, keep=version)
    return manifest


def _new_version() -> str:
    """A fresh version directory name: sorts by time, unique across concurrent builders."""
    return f"{VERSION_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def _remove_old_versions(storage: Storage, name: str, keep: str) -> None:
    """Delete every version directory of dataset ``name`` but ``keep`` (once its manifest is written),
    the leftovers of builders that were killed included."""
    for entry in storage.fs.ls(storage.dataset_dir(name), detail=False):
        leaf = entry.rstrip("/").rsplit("/", 1)[-1]
        if leaf.startswith(VERSION_PREFIX) and leaf != keep:
            _remove(storage, entry)


def _remove(storage: Storage, path: str) -> None:
    if storage.fs.exists(path):
        storage.fs.rm(path, recursive=True)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
