"""``seqgen serve``'s warning about serving beyond loopback without API keys (in-process)."""

from __future__ import annotations

import pytest

from seqgen.cli.serving import _loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_need_no_warning(host):
    assert _loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "192.0.2.7", "myhost.example"])
def test_other_hosts_are_warned_about(host):
    assert not _loopback(host)
