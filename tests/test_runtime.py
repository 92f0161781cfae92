"""`seqgen.runtime.ensure_ray` joins a Ray that is already up and says it started none. (That the
Ray it starts is a local one on loopback only, and that `seqgen serve` stops it on Ctrl-C, is
tests/serve/test_ingress.py's `seqgen serve` run: a fresh process, as Ray reads its settings when
it is imported.)"""

import pytest

pytestmark = pytest.mark.ray


def test_ensure_ray_joins_the_ray_that_is_up(ray_session):
    from seqgen.runtime import ensure_ray

    node = ray_session.get_runtime_context().get_node_id()
    assert ensure_ray() is False and ensure_ray(num_cpus=1) is False
    assert ray_session.is_initialized() and ray_session.get_runtime_context().get_node_id() == node
