"""Leases: one writer at a time per run or dataset name, on any storage (local, ``memory://``, S3).

A lease is a small JSON object beside what it protects (``<run>/lease.json``,
``<dataset>/lease.json``)::

    {"holder": "host:pid:uuid", "what": "run 'x'", "acquired": t0, "heartbeat": t, "timeout": 60}

The writer (``seqgen train``'s driver, a preprocessing driver) takes it before writing and renews
``heartbeat`` from a background thread every ``timeout / 4`` s. A second writer that finds a lease
whose heartbeat is younger than ``timeout`` fails at once (``LeaseHeld``, naming the holder and how
to take over); a lease whose holder stopped heartbeating for ``timeout`` s (the process died, the
machine is gone) is taken over, and so is at once the lease of a holder that was a process of
this host (and PID namespace) which no longer exists. The heartbeat is the holder's wall clock: hosts whose clocks
disagree by a sizeable part of ``timeout`` would misjudge staleness (NTP keeps them far closer).

Every change of the lease object is a compare-and-swap against the version last read, so two
writers racing to take the same lease cannot both win:

* local disks: an ``fcntl.flock`` on ``lease.json.lock`` around read-compare-write (the write
  itself is a rename) -- exact for processes on one host; NFS locks are only as good as the mount;
* ``memory://``: one process, a lock;
* S3: conditional PUT / DELETE (``If-None-Match: *`` to create, ``If-Match: <ETag>`` to renew,
  take over or release; AWS S3 has both since 2024). A server that ignores these headers is caught
  most of the time by reading the object back after every write; what remains is the window of
  plain last-writer-wins: two takers whose read-to-write gaps overlap within ``SETTLE_S``.
* any other fsspec file system: write, wait ``SETTLE_S``, read back and verify (same window).

A holder that loses its lease (its heartbeats stalled past the timeout and someone took over) learns
it at its next renewal; the training loop also checks the holder before each checkpoint it writes
(``check_holder``), so a run that lost its lease stops before overwriting the new holder's work.
The window left is between that check and the write.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import threading
import time
import uuid

from fsspec.core import url_to_fs

from seqgen.storage import Storage, join, write_atomic

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = float(os.environ.get("SEQGEN_LEASE_TIMEOUT", "60"))
SETTLE_S = 0.5  # read-back delay on storages without compare-and-swap
LEASE_FILE = "lease.json"


class LeaseHeld(RuntimeError):
    """Another live writer holds the lease."""


class LeaseLost(RuntimeError):
    """This writer's lease was taken over by another."""


def new_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _process_identity() -> dict:
    """Where the holder's process can be looked up: host name and PID namespace (containers on one
    host share a host name but not PIDs)."""
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = ""
    return {"host": socket.gethostname(), "pid": os.getpid(), "pidns": pidns}


def _exited_here(record: dict) -> bool:
    """Is the holder a process of this host and PID namespace that no longer exists? Then its lease
    is taken over at once (a killed `seqgen train` can be re-run immediately). A reused PID only
    makes us wait for the timeout."""
    me = _process_identity()
    if not me["pidns"] or record.get("host") != me["host"] or record.get("pidns") != me["pidns"]:
        return False
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, TypeError, ValueError):
        return False
    return False


class Lease:
    """The lease at ``url`` (an fsspec URL of ``lease.json``) on ``what`` (for messages)."""

    def __init__(self, url: str, what: str, timeout: float = DEFAULT_TIMEOUT_S, holder: str | None = None):
        self.url, self.what, self.timeout = url, what, float(timeout)
        self.holder = holder or new_holder()
        self.slot = _slot(url)
        self.lost: str | None = None  # why the lease was lost, once it is
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- taking, renewing, releasing ---------------------------------------------------------
    def acquire(self) -> "Lease":
        """Take the lease or raise ``LeaseHeld``; then renew it in the background."""
        record, token = self.slot.read()
        now = time.time()
        if record is not None and record.get("holder") != self.holder:
            age = now - float(record.get("heartbeat", 0))
            if _exited_here(record):
                log.warning("%s: taking over the lease of %s, whose process on this host has exited",
                            self.what, record.get("holder"))
            elif age < float(record.get("timeout", self.timeout)):
                raise LeaseHeld(self._held_message(record, age))
            else:
                log.warning("%s: taking over the lease of %s, whose last heartbeat was %.0f s ago",
                            self.what, record.get("holder"), age)
        mine = {"holder": self.holder, "what": self.what, "acquired": now, "heartbeat": now, "timeout": self.timeout,
                **_process_identity()}
        if self.slot.write(mine, token) is None:  # someone else changed it between our read and write
            record, _ = self.slot.read()
            raise LeaseHeld(self._held_message(record or {}, time.time() - float((record or {}).get("heartbeat", 0))))
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease {self.what}", daemon=True)
        self._thread.start()
        return self

    def _renew_loop(self) -> None:
        interval = max(self.timeout / 4, 0.05)
        while not self._stop.wait(interval):
            try:
                self.renew()
            except LeaseLost as e:
                self.lost = str(e)
                log.error("%s", e)
                return
            except Exception as e:  # noqa: BLE001 - storage hiccup: try again next beat
                log.warning("%s: lease heartbeat failed (%s); retrying", self.what, e)

    def renew(self) -> None:
        """Write a new heartbeat, if the lease is still ours (else ``LeaseLost``)."""
        record, token = self.slot.read()
        if record is None or record.get("holder") != self.holder:
            raise LeaseLost(f"{self.what}: lost the lease to {(record or {}).get('holder', 'nobody')} "
                            f"(this writer's heartbeats stalled past {self.timeout:.0f} s); stop writing")
        if self.slot.write({**record, "heartbeat": time.time()}, token) is None:
            raise LeaseLost(f"{self.what}: the lease changed while renewing it; stop writing")

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        record, token = self.slot.read()
        if record is not None and record.get("holder") == self.holder:
            self.slot.delete(token)

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _held_message(self, record: dict, age: float) -> str:
        timeout = float(record.get("timeout", self.timeout))
        return (f"{self.what} is being written by {record.get('holder', 'another writer')} (lease {self.url}, "
                f"last heartbeat {max(age, 0):.0f} s ago): wait for it to finish, or stop it; a lease whose "
                f"holder is gone is taken over {timeout:.0f} s after its last heartbeat (or delete {self.url} "
                "if you are sure no one writes)")


def check_holder(url: str, holder: str, what: str) -> None:
    """Raise ``LeaseLost`` unless the lease at ``url`` is held by ``holder`` (the fencing check
    before a write that another writer must not have overtaken)."""
    record, _ = _slot(url).read()
    if record is None or record.get("holder") != holder:
        raise LeaseLost(f"{what}: this writer ({holder}) no longer holds its lease "
                        f"(now: {(record or {}).get('holder', 'nobody')}); it stops before writing")


# -- where the leases are, and the decorator for dataset builders --------------------------------
def run_lease(storage: Storage, run_name: str, **kwargs) -> Lease:
    return Lease(storage.url_of(join(storage.run_dir(run_name), LEASE_FILE)), f"run {run_name!r}", **kwargs)


def dataset_lease(storage: Storage, name: str, **kwargs) -> Lease:
    return Lease(storage.url_of(join(storage.dataset_dir(name), LEASE_FILE)), f"dataset {name!r}", **kwargs)


def writes_dataset(build):
    """Decorate a dataset builder ``build(storage, name, ...)`` to hold the dataset's lease while it runs."""
    @functools.wraps(build)
    def wrapper(storage: Storage, name: str, *args, **kwargs):
        with dataset_lease(storage, name):
            return build(storage, name, *args, **kwargs)

    return wrapper


# -- compare-and-swap on one small object, per kind of storage -----------------------------------
def _slot(url: str):
    fs, path = url_to_fs(url)
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    if "file" in protocols or "local" in protocols:
        return _LocalSlot(fs, path)
    if "memory" in protocols:
        return _LockedSlot(fs, path)
    if "s3" in protocols or "s3a" in protocols:
        return _S3Slot(fs, path)
    return _VerifiedSlot(fs, path)


class _Slot:
    """read() -> (record or None, version token); write(record, token) -> new token, or None if the
    object is no longer at version ``token`` (None = absent); delete(token)."""

    def __init__(self, fs, path: str):
        self.fs, self.path = fs, path

    def _read_bytes(self) -> bytes | None:
        try:
            return self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None

    @staticmethod
    def _decode(data: bytes | None) -> dict | None:
        if data is None:
            return None
        try:
            record = json.loads(data)
        except ValueError:
            return {}  # torn or foreign: a lease of no one, stale at once
        return record if isinstance(record, dict) else {}

    def read(self):
        data = self._read_bytes()
        return self._decode(data), data


_MEMORY_LOCK = threading.Lock()


class _LockedSlot(_Slot):
    """``memory://``: the file system lives in this process, so a process-wide lock makes the
    read-compare-write atomic."""

    @contextlib.contextmanager
    def _locked(self):
        with _MEMORY_LOCK:
            yield

    def _put(self, data: bytes) -> None:
        self.fs.pipe_file(self.path, data)  # one assignment in this process's store: readers see all or nothing

    def _remove(self) -> None:
        self.fs.rm_file(self.path)

    def write(self, record: dict, token):
        data = json.dumps(record).encode()
        with self._locked():
            if self._read_bytes() != token:
                return None
            self._put(data)
        return data

    def delete(self, token) -> bool:
        with self._locked():
            if self._read_bytes() != token:
                return False
            self._remove()
        return True


class _LocalSlot(_LockedSlot):
    """Local disk: ``flock`` on a lock file beside the lease serialises the writers of this host;
    the lease itself is replaced by a rename (``write_atomic``), so readers never see half of it."""

    @contextlib.contextmanager
    def _locked(self):
        import fcntl

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _put(self, data: bytes) -> None:
        write_atomic(self.fs, self.path, data)  # readers do not take the lock: they must see whole leases


class _S3Slot(_Slot):
    """S3: the version token is the object's ETag; writes and deletes are conditional on it.

    Not ``write_atomic``: its rename is a copy on S3, which cannot carry the If-Match /
    If-None-Match condition that makes taking a lease a compare-and-swap; one PUT is atomic anyway."""

    def __init__(self, fs, path: str):
        super().__init__(fs, path)
        self.bucket, self.key, _ = fs.split_path(path)

    def _call(self, method: str, **kwargs):
        from fsspec.asyn import sync

        return sync(self.fs.loop, self.fs._call_s3, method, Bucket=self.bucket, Key=self.key, **kwargs)

    def read(self):
        from fsspec.asyn import sync

        async def get():
            try:
                response = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self.key)
            except FileNotFoundError:
                return None, None
            body = await response["Body"].read()
            return body, response["ETag"]

        data, etag = sync(self.fs.loop, get)
        return self._decode(data), etag

    def write(self, record: dict, token):
        data = json.dumps(record).encode()
        condition = {"IfNoneMatch": "*"} if token is None else {"IfMatch": token}
        try:
            response = self._call("put_object", Body=data, **condition)
        except Exception as e:  # noqa: BLE001 - s3fs maps 412 / 409 to various exception types
            if _is_precondition_failure(e):
                return None
            raise
        # read back: catches a server that ignored the condition and a racing plain writer
        back, etag = self.read()
        if back != record:
            return None
        return etag or response.get("ETag")

    def delete(self, token) -> bool:
        try:
            self._call("delete_object", IfMatch=token)
        except Exception as e:  # noqa: BLE001
            if _is_precondition_failure(e) or isinstance(e, FileNotFoundError):
                return False
            raise
        return True


def _is_precondition_failure(e: Exception) -> bool:
    text = f"{type(e).__name__} {e} {getattr(e, '__cause__', '')}"
    return any(s in text for s in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"))


class _VerifiedSlot(_Slot):
    """Storages without compare-and-swap: compare, write, wait, read back (see the module's race).

    One plain write, not ``write_atomic``: these are object stores, where one PUT is already
    atomic and a rename would be a copy and a delete, widening the race window."""

    def write(self, record: dict, token):
        data = json.dumps(record).encode()
        if self._read_bytes() != token:
            return None
        with self.fs.open(self.path, "wb") as f:
            f.write(data)
        time.sleep(SETTLE_S)
        back = self._read_bytes()
        return back if back == data else None

    def delete(self, token) -> bool:
        if self._read_bytes() != token:
            return False
        self.fs.rm_file(self.path)
        return True
