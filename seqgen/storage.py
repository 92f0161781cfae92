"""One storage root, an fsspec URL, and the canonical paths inside it.

Layout under the root (nothing else in seqgen builds paths by hand)::

    <root>/datasets/<name>/manifest.json        written last: a dataset exists iff this exists
    <root>/datasets/<name>/<version>/<split>/part-00000.parquet
    <root>/runs/<run>/                          Ray Train's storage_path/name for a training run
    <root>/runs/<run>/checkpoint_*/             checkpoints (manifest.json written last)
    <root>/runs/<run>/metrics.csv, curves.png   evaluation history beside the run
    <root>/tune/<search>/                       Ray Tune experiment + results.csv / results.md

The root comes from ``--storage`` or ``$SEQGEN_STORAGE``; the default is ``./seqgen-storage``.
``memory://`` works in-process (tests), ``s3://`` / ``gs://`` need the ``s3`` / ``gcs`` extras.
For an S3-compatible server (MinIO, moto, Ceph) set ``AWS_ENDPOINT_URL``: botocore (s3fs) and
pyarrow's ``FileSystem.from_uri`` (Ray Train's and Tune's storage) both read it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from contextlib import suppress
from dataclasses import dataclass

import fsspec
from fsspec.core import url_to_fs

DEFAULT_ROOT = "./seqgen-storage"
TEMP_PREFIX = ".tmp-"  # files being written; readers and listings ignore them
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

# s3fs and gcsfs cache directory listings for the life of a process. Here other processes write
# beside us all the time (Ray workers' checkpoints, a Tune trial's run, a dataset's shards), so a
# cached listing would hide them: seqgen never caches listings.
for _protocol in ("s3", "gcs", "gs"):
    fsspec.config.conf.setdefault(_protocol, {}).setdefault("use_listings_cache", False)


def default_root() -> str:
    return os.environ.get("SEQGEN_STORAGE", DEFAULT_ROOT)


def check_name(name: str, what: str = "name") -> str:
    """User-supplied dataset/run names are single path components: they cannot escape the root."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(
            f"invalid {what} {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no '/' or '..')"
        )
    return name


@dataclass(frozen=True)
class Storage:
    """An fsspec file system plus the root path inside it."""

    url: str

    @classmethod
    def from_url(cls, url: str | None = None) -> "Storage":
        url = url or default_root()
        if "://" not in url:
            url = os.path.abspath(os.path.expanduser(url))
        return cls(url.rstrip("/") or "/")

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return url_to_fs(self.url)[0]

    @property
    def root(self) -> str:
        """The root as a path inside ``fs`` (no protocol)."""
        return url_to_fs(self.url)[1]

    @property
    def is_local(self) -> bool:
        return "://" not in self.url or self.url.startswith("file://")

    @property
    def shared_across_processes(self) -> bool:
        """``memory://`` lives in one process: Ray tasks and workers cannot see it."""
        return shared_across_processes(self.url)

    def path(self, *parts: str) -> str:
        """A path under the root from relative parts."""
        return join(self.root, *parts)

    def url_of(self, path: str) -> str:
        """Turn a path inside ``fs`` back into a URL another process can open."""
        return url_for(self.fs, path)

    # canonical locations -------------------------------------------------------------
    def dataset_dir(self, name: str) -> str:
        return self.path("datasets", check_name(name, "dataset name"))

    def runs_dir(self) -> str:
        return self.path("runs")

    def run_dir(self, name: str) -> str:
        return self.path("runs", check_name(name, "run name"))

    def tune_dir(self, name: str | None = None) -> str:
        return self.path("tune", check_name(name, "search name")) if name else self.path("tune")

    # atomic writes --------------------------------------------------------------------
    def write_bytes_atomic(self, path: str, data: bytes) -> None:
        write_atomic(self.fs, path, data)

    def write_json_atomic(self, path: str, obj) -> None:
        self.write_bytes_atomic(path, json.dumps(obj, indent=2, sort_keys=True).encode())

    def read_json(self, path: str):
        with self.fs.open(path, "rb") as f:
            return json.loads(f.read())

    def exists(self, path: str) -> bool:
        return self.fs.exists(path)


def shared_across_processes(url: str) -> bool:
    """Can another process (a Ray task or worker) open ``url``? Not ``memory://``."""
    return not str(url).startswith("memory://")


def url_for(fs, path: str) -> str:
    """A path inside the fsspec file system ``fs`` as a URL another process can open (the one place
    that turns paths back into URLs): local paths stay paths, others get their protocol back."""
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return path if protocol in ("file", "local") else f"{protocol}://{path.lstrip('/')}"


def write_atomic(fs, path: str, data: bytes) -> None:
    """Write ``data`` at ``path`` on the fsspec file system ``fs`` so that readers see the old file
    or the new one, never half of one: write a temporary name beside it, then rename (a rename on
    local disks; on object stores a copy, whose PUT is atomic). The one atomic write of seqgen."""
    parent, _, name = path.rpartition("/")
    fs.makedirs(parent or "/", exist_ok=True)
    tmp = f"{parent}/{TEMP_PREFIX}{uuid.uuid4().hex}-{name}"
    try:
        with fs.open(tmp, "wb") as f:
            f.write(data)
        fs.mv(tmp, path)
    except BaseException:
        with suppress(Exception):  # a failed write leaves nothing behind (if the tmp got that far)
            fs.rm(tmp)
        raise


def join(base: str, *parts: str) -> str:
    """Join path components with '/', whatever the file system."""
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts if p]])


def write_parquet(url: str, table) -> str:
    """Write a pyarrow table as one Parquet file at any fsspec URL (a task's shard); returns the
    sha256 of the file's bytes, for the manifest that lists it."""
    import io

    import pyarrow.parquet as pq

    fs, path = url_to_fs(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    data = buf.getvalue()
    with fs.open(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()
