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
    import ray

    from seqgen.runtime import apply_local_env

    apply_local_env()
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray


@pytest.fixture(scope="session")
def shared_data():
    d = data_dir()
    if d is None or not d.is_dir():
        pytest.skip("shared data directory not found: set SEQGEN_DATA_DIR to ../shared/data")
    return d


def pytest_configure(config):
    # Tests run tiny models: one thread avoids OpenMP oversubscription on shared 2-core boxes,
    # in this process and in the training subprocesses the tests start.
    import os

    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


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
