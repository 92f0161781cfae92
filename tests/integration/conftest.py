"""The multi-node cluster of tests/integration/test_cluster.py: a head and two worker nodes of our own
on 127.0.0.1 (tests/integration/cluster.py), every node reaching the S3 server (the ``s3`` fixture)."""

from __future__ import annotations

import pytest

from tests.integration.cluster import Cluster


@pytest.fixture(scope="module")
def cluster(s3, tmp_path_factory):
    """Head (no CPUs: job drivers and Ray Train controllers) + node_a, node_b (1 CPU each)."""
    with Cluster(tmp_path_factory.mktemp("cluster"), env=s3.env) as c:
        c.start_head(num_cpus=0)
        c.start_node("node_a")  # one after the other: Ray gives a starting node 30 s to register,
        c.start_node("node_b")  # which two at once on a busy 2-core machine can exceed
        yield c
