"""Shared fixtures: one local Ray for the whole session (ray.init ~5 s), the shared data dir."""

from __future__ import annotations

import pytest

from seqgen.data.presets import data_dir


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
