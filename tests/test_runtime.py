"""The local default Ray listens on loopback only (a fresh process: Ray reads its settings when
it is imported, which is why `seqgen.runtime.ensure_ray` / `apply_local_env` apply them, also to a
Ray imported earlier)."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.ray

CHILD = """
import os
os.environ.pop("RAY_ADDRESS", None)
import seqgen.runtime, ray
started, again = seqgen.runtime.ensure_ray(num_cpus=1), seqgen.runtime.ensure_ray()
print(started, again, sorted({n["NodeManagerAddress"] for n in ray.nodes()}))
"""


def test_local_ray_binds_loopback():
    """... and ensure_ray says it started that Ray (`seqgen serve` then stops it on Ctrl-C), once."""
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=180)
    assert out.stdout.strip().splitlines()[-1] == "True False ['127.0.0.1']", out.stderr[-2000:]
