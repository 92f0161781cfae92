"""Shared fixtures: one local Ray for the whole session (ray.init ~5 s), the shared data dir, and
one S3-compatible server (moto's server mode on 127.0.0.1)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from seqgen.data.presets import data_dir
from tests.processes import free_port, stop_group, wait_for_url


@pytest.fixture(scope="session")
def ray_session():
    """The one local Ray of the session (2 CPUs, no dashboard, every socket on 127.0.0.1): started by
    the first test that needs it and shut down at the end of the session, or the one a test already
    started in this process (seqgen's ensure_ray), left as it is."""
    from seqgen.runtime import apply_local_env

    apply_local_env()  # before `import ray`: Ray reads its settings when it is imported
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def shared_data():
    d = data_dir()
    if d is None or not d.is_dir():
        pytest.skip("shared data directory not found: set SEQGEN_DATA_DIR to ../shared/data")
    return d


def pytest_configure(config):
    # Tests run tiny models: one thread avoids OpenMP oversubscription on shared 2-core boxes,
    # in this process and in the training subprocesses the tests start.
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------
# Markers (registered in pyproject.toml). `pytest -m "not slow"` is the quick tier: the in-process
# unit tests, under 2 minutes on 2 cores.
#
# A test that uses one of these fixtures, directly or through other fixtures, gets their markers.
FIXTURE_MARKERS = {
    "ray_session": ("ray",),  # the session's local Ray (ray.init ~5 s)
    "serve_started": ("ray", "serve"),  # Serve on that Ray (~8 s to start)
    "cluster": ("ray", "cluster"),  # `ray start` nodes of our own (tests/integration)
    "s3": ("s3",),  # moto's S3 server, a process of its own
}
# Tests that ask for such fixtures by name while they run (request.getfixturevalue): not visible
# to the hook, so named here.
BY_NAME = {"tests/serve/test_schemathesis.py": ("ray", "serve")}
# Every test marked with one of these is slow ...
SLOW_MARKERS = {"ray", "serve", "cluster", "s3"}
# ... and so are these (node ids, or a file for all its tests): each measured above ~2 s on the
# 2-core box (`--durations`), mostly training or subprocesses. A test that starts Ray in this
# process without being marked `ray` fails (see _ray_needs_a_marker).
SLOW = {
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by these markers
def pytest_collection_modifyitems(config, items):
    seen = set()
    for item in items:
        path, _, name = item.nodeid.partition("::")
        names = {m.name for m in item.iter_markers()}
        for fixture, markers in FIXTURE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                names.update(markers)
        names.update(BY_NAME.get(path, ()))
        test = f"{path}::{name.split('[')[0]}"
        for key in (path, test, item.nodeid):
            if key in SLOW:
                seen.add(key)
                names.add("slow")
        if names & SLOW_MARKERS:
            names.add("slow")
        for marker in sorted(names - {m.name for m in item.iter_markers()}):
            item.add_marker(marker)
    # A renamed or removed test must not silently leave the quick tier slower: in a run over the
    # whole suite every entry of SLOW must name collected tests.
    if [str(a) for a in config.args] == config.getini("testpaths"):
        stale = sorted(set(SLOW) - seen)
        if stale:
            raise pytest.UsageError(f"tests/conftest.py SLOW names tests that do not exist: {stale}")


@pytest.fixture(autouse=True)
def _ray_needs_a_marker(request):
    """A test that starts Ray in this process must be marked `ray` (a fixture of FIXTURE_MARKERS or
    the marker itself), or the quick tier would start Ray without anyone noticing."""
    before = _ray_running()
    yield
    if not before and _ray_running() and request.node.get_closest_marker("ray") is None:
        pytest.fail(f"{request.node.nodeid} started Ray but is not marked `ray` (tests/conftest.py)")


def _ray_running() -> bool:
    ray = sys.modules.get("ray")  # never imported by this check
    return ray is not None and hasattr(ray, "is_initialized") and ray.is_initialized()


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    env: dict  # what a process needs to reach this server (endpoint, dummy credentials, region)

    def url(self, prefix: str = "") -> str:
        """A fresh ``s3://bucket/<prefix>-<uuid>`` root, so tests never see each other's objects."""
        return f"s3://{self.bucket}/{prefix or 'root'}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """moto's S3 server on a free loopback port, a bucket, and AWS_ENDPOINT_URL + dummy credentials
    in this process's environment (botocore/s3fs and pyarrow both read them); processes started
    later (``ray start`` nodes, a local Ray's workers) inherit them."""
    import s3fs

    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    try:
        wait_for_url(f"{endpoint}/moto-api/", proc, 60, f"moto_server on {endpoint}", 0.2,
                     lambda: log.read_text()[-2000:])
        os.environ.update(env)
        # fsspec caches file system instances by their arguments, not the environment: one made
        # before AWS_ENDPOINT_URL was set (or for an earlier server) would talk to the wrong host.
        s3fs.S3FileSystem.clear_instance_cache()
        bucket = "seqgen-test"
        s3fs.S3FileSystem().mkdir(bucket)
        yield S3Server(endpoint, bucket, env)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        s3fs.S3FileSystem.clear_instance_cache()
        stop_group(proc, timeout=10)
