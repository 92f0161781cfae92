"""Request ids and API keys, in-process: which ids are kept, and how keys are read and checked."""

from __future__ import annotations

import asyncio
import hmac

import pytest

from seqgen.serve import api_keys
from seqgen.serve.api_keys import ApiKeys, read_keys
from seqgen.serve.request_ids import RequestIdFilter, request_id, well_formed


@pytest.mark.parametrize("value", ["a", "abc-DEF_012.x", "x" * 128, "0123456789abcdef0123456789abcdef"])
def test_well_formed_ids_are_kept(value):
    assert well_formed(value)
    assert request_id([(b"x-request-id", value.encode())]) == value


@pytest.mark.parametrize("value", ["", "x" * 129, "a b", "a/b", "id\nforged-log-line", "é", "a;b", "<script>"])
def test_malformed_ids_are_replaced(value):
    assert not well_formed(value)
    new = request_id([(b"x-request-id", value.encode("utf-8"))])
    assert new != value and well_formed(new)


def test_a_missing_id_is_generated_fresh_each_time():
    a, b = request_id([]), request_id([(b"content-type", b"application/json")])
    assert well_formed(a) and well_formed(b) and a != b


def test_the_proxy_filter_leaves_one_well_formed_id_for_serve_to_echo():
    seen = []

    async def app(scope, receive, send):
        seen.append([v for n, v in scope["headers"] if n == b"x-request-id"])

    async def run(headers):
        await RequestIdFilter(app)({"type": "http", "headers": headers}, None, None)
        return seen[-1]

    assert asyncio.run(run([(b"x-request-id", b"keep.me-1")])) == [b"keep.me-1"]
    replaced = asyncio.run(run([(b"X-Request-Id", b"bad id"), (b"x-request-id", b"two")]))
    assert len(replaced) == 1 and replaced[0] not in (b"bad id", b"two") and well_formed(replaced[0].decode())
    assert len(asyncio.run(run([]))) == 1


def test_keys_come_from_the_file_and_the_environment(tmp_path):
    f = tmp_path / "keys"
    f.write_text("# team keys\nfirst-key\n\n  second-key  \n")
    assert read_keys(f, env={"SEQGEN_API_KEYS": "third, fourth fifth"}) == [
        "first-key", "second-key", "third", "fourth", "fifth"]
    assert read_keys(None, env={}) == []


def test_keys_are_checked_as_bearer_tokens():
    keys = ApiKeys.of(["k1", "k2"])
    assert keys.required
    assert keys.allows("Bearer k1") and keys.allows("bearer k2") and keys.allows("Bearer  k2 ")
    for header in (None, "", "Bearer", "Bearer ", "Basic k1", "k1", "Bearer k3", "Bearer k1k2", "Bearer k"):
        assert not keys.allows(header), header
    assert ApiKeys().allows(None) and not ApiKeys().required


def test_keys_are_kept_as_digests_and_compared_in_constant_time(monkeypatch):
    keys = ApiKeys.of(["secret-key"])
    assert "secret-key" not in repr(keys) and "secret-key" not in str(keys.digests)
    compared, real = [], hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(api_keys.hmac, "compare_digest", spy)
    many = ApiKeys.of(["a", "b", "secret-key", "d"])
    assert many.allows("Bearer secret-key")
    assert len(compared) == 4  # every digest is compared, whichever matched
    assert all(len(a) == len(b) == 64 for a, b in compared)  # digests: equal lengths whatever was sent
