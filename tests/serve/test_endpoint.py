"""The Serve endpoint over real HTTP on 127.0.0.1: generation, scoring, validation, batching."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

pytestmark = pytest.mark.ray

TIMEOUT = 60


@pytest.fixture(scope="module")
def local_model(tiny_checkpoint):
    from seqgen.data.tokenizers import Vocabulary
    from seqgen.catalog import load_model

    model, loaded = load_model(tiny_checkpoint)
    return model, Vocabulary.from_json(loaded.meta["vocab"])


def post(url: str, route: str, body=None, **kw) -> requests.Response:
    return requests.post(f"{url}{route}", json=body, timeout=TIMEOUT, **kw)


def test_health_and_info(serve_url, tiny_checkpoint, local_model):
    assert requests.get(f"{serve_url}/healthz", timeout=TIMEOUT).json() == {"status": "ok"}
    info = requests.get(f"{serve_url}/info", timeout=TIMEOUT).json()
    assert info["checkpoint"] == tiny_checkpoint
    assert info["run_name"] == "serve-tiny"
    assert info["kind"] == "text"
    assert info["vocab_size"] == len(local_model[1])
    assert info["model_config"]["hidden_size"] == 32
    assert info["engine"]["max_streams"] == 32 and info["engine"]["max_queued"] == 32


def test_seeded_generation_is_reproducible(serve_url):
    body = {"prompt": "ROMEO:", "length": 80, "temperature": 1.0, "seed": 1234}
    first = post(serve_url, "/generate", body)
    assert first.status_code == 200, first.text
    again = post(serve_url, "/generate", body).json()
    assert first.json()["samples"] == again["samples"]
    assert len(again["samples"]) == 1 and len(again["samples"][0]) == 80
    assert again["model"]["run_name"] == "serve-tiny"
    other = post(serve_url, "/generate", {**body, "seed": 4321}).json()
    assert other["samples"] != again["samples"]


def test_n_samples(serve_url):
    r = post(serve_url, "/generate", {"length": 40, "n": 3, "seed": 7})
    assert r.status_code == 200, r.text
    samples = r.json()["samples"]
    assert len(samples) == 3 and all(len(s) == 40 for s in samples)
    assert len(set(samples)) > 1  # sample i uses seed + i


def test_temperature_zero_is_library_greedy(serve_url, local_model):
    from seqgen.text_sampling import generate

    model, vocab = local_model
    r = post(serve_url, "/generate", {"prompt": "First Citizen:\n", "length": 60, "temperature": 0.0})
    assert r.status_code == 200, r.text
    expected = generate(model, vocab, "First Citizen:\n", length=60, temperature=0.0)
    assert r.json()["samples"] == expected


def test_unknown_characters_are_400_naming_them(serve_url):
    r = post(serve_url, "/generate", {"prompt": "To be {or} not é"})
    assert r.status_code == 400
    body = r.json()
    assert set(body["unknown_symbols"]) == {"{", "}", "é"}
    for symbol in ("'{'", "'}'", "'é'"):
        assert symbol in body["message"]
    r = post(serve_url, "/score", {"text": "a~b"})
    assert r.status_code == 400 and r.json()["unknown_symbols"] == ["~"]
    r = post(serve_url, "/generate", {"prompt": "\ud800"})  # lone surrogate: not a valid string
    assert r.status_code == 422, r.text


@pytest.mark.parametrize("body", [
    {"length": "200"}, {"length": 0}, {"length": 5001}, {"length": 2.5}, {"length": True},
    {"temperature": -0.1}, {"temperature": 10.5}, {"temperature": "hot"},
    {"top_k": -1}, {"n": 0}, {"n": 17}, {"seed": -1}, {"seed": 1.5},
    {"prompt": 123}, {"prompt": None}, {"unexpected": 1}, [1, 2], "text",
    {"prompt": "a" * 10_001},
])
def test_schema_violations_are_422_json(serve_url, body):
    r = post(serve_url, "/generate", body)
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["error"] == "invalid_request" and err["detail"] and err["message"]


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"temperature": NaN}', b'{"temperature": Infinity}'])
def test_malformed_json_is_422(serve_url, raw):
    r = requests.post(f"{serve_url}/generate", data=raw, headers={"content-type": "application/json"},
                      timeout=TIMEOUT)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_request"


def test_oversize_is_refused(serve_url):
    r = post(serve_url, "/generate", {"prompt": "a" * 400_000})
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    r = post(serve_url, "/score", {"text": "a" * 20_001})
    assert r.status_code == 422
    for body in ({"text": ""}, {}, {"text": 5}):
        r = post(serve_url, "/score", body)
        assert r.status_code == 422, r.text


def test_score(serve_url, local_model):
    from seqgen.text_sampling import score_text

    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n"
    r = post(serve_url, "/score", {"text": text})
    assert r.status_code == 200, r.text
    got = r.json()
    expected = score_text(*local_model, text)
    assert got["tokens"] == len(text) == expected["tokens"]
    assert got["log_prob"] == pytest.approx(expected["log_prob"], rel=1e-4)
    assert got["bits_per_token"] == pytest.approx(-got["log_prob"] / math.log(2) / len(text), rel=1e-6)
    assert got["perplexity"] == pytest.approx(2 ** got["bits_per_token"], rel=1e-6)


def test_concurrent_requests_are_batched(serve_url):
    before = requests.get(f"{serve_url}/stats", timeout=TIMEOUT).json()
    alone = post(serve_url, "/generate", {"prompt": "KING", "length": 100, "seed": 5}).json()["samples"]

    def one(i: int):
        return post(serve_url, "/generate", {"prompt": "KING", "length": 100, "seed": i, "n": 1 + i % 2})

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(one, range(16)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    assert [len(r.json()["samples"]) for r in responses] == [1 + i % 2 for i in range(16)]
    # a seeded request's text does not depend on what shared its batch
    assert responses[5].json()["samples"][0] == alone[0]  # (request 5 asked for n=2)
    after = requests.get(f"{serve_url}/stats", timeout=TIMEOUT).json()
    assert after["requests"]["completed"] - before["requests"].get("completed", 0) == 17
    steps = after["steps"] - before["steps"]
    assert steps < 16 * 100  # rows of different requests shared steps
    assert after["max_batch_size_seen"] > 1, after["batch_sizes"]


def test_unknown_route_and_method(serve_url):
    assert requests.get(f"{serve_url}/nope", timeout=TIMEOUT).status_code == 404
    assert requests.get(f"{serve_url}/generate", timeout=TIMEOUT).status_code == 405
