"""/generate's stop strings, top_p and max_tokens over real HTTP: the answer ends before the first
stop string (streamed or not, with its finish reason), max_tokens is length, and seeded samples
are the same alone and among concurrent requests."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

pytestmark = pytest.mark.ray

TIMEOUT = 60


def generate(url: str, **body) -> dict:
    r = requests.post(f"{url}/generate", json=body, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()


def streamed(url: str, **body) -> tuple[str, dict]:
    import json

    text, done = "", None
    with requests.post(f"{url}/generate", json={**body, "stream": True}, stream=True, timeout=TIMEOUT) as r:
        for block in r.text.split("\n\n"):
            if block.strip():
                event, data = (line.split(": ", 1)[1] for line in block.splitlines())
                if event == "chunk":
                    text += json.loads(data)["text"]
                elif event == "done":
                    done = json.loads(data)
    return text, done


def test_stop_strings_end_samples_streamed_or_not(serve_url):
    full = generate(serve_url, prompt="ROMEO:", length=400, seed=3, n=2)
    assert full["finish_reasons"] == ["length", "length"]
    stop = full["samples"][0][50:53]
    cut = generate(serve_url, prompt="ROMEO:", length=400, seed=3, n=2, stop=stop)
    for text, reason, sample in zip(full["samples"], cut["finish_reasons"], cut["samples"]):
        at = text.find(stop)
        assert sample == (text[:at] if at >= 0 else text) and reason == ("stop" if at >= 0 else "length")
    text, done = streamed(serve_url, prompt="ROMEO:", length=400, seed=3, stop=[stop, "\u263a"])
    assert text == cut["samples"][0] and done["finish_reasons"] == ["stop"]


def test_max_tokens_is_length_and_top_p_samples_the_nucleus(serve_url):
    a = generate(serve_url, length=200, max_tokens=30, seed=1, top_p=0.8)
    assert a["samples"] == generate(serve_url, max_tokens=30, seed=1, top_p=0.8)["samples"]
    assert a["samples"] == generate(serve_url, length=30, seed=1, top_p=0.8)["samples"]
    assert len(a["samples"][0]) == 30
    greedy = generate(serve_url, length=60, temperature=0, seed=1)["samples"]
    assert generate(serve_url, length=60, top_p=1e-12, seed=2)["samples"] == greedy
    assert generate(serve_url, length=60, top_p=1, seed=2)["samples"] == generate(serve_url, length=60, seed=2)["samples"]


@pytest.mark.parametrize("body", [{"top_p": 0}, {"top_p": 1.5}, {"stop": ""}, {"stop": ["a"] * 5},
                                  {"stop": ["x" * 65]}, {"max_tokens": 0}, {"stop": 3}])
def test_bad_controls_are_422(serve_url, body):
    r = requests.post(f"{serve_url}/generate", json=body, timeout=TIMEOUT)
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"


def test_seeded_samples_are_the_same_alone_and_among_concurrent_requests(serve_url):
    bodies = [{"prompt": "KING", "length": 120, "seed": s, "top_p": p, "stop": stop}
              for s, p, stop in ((1, 0.9, ["e "]), (2, 1.0, None), (3, 0.5, ["\n\n", "ing"]), (4, 0.95, None))]
    alone = [generate(serve_url, **b) for b in bodies]
    with ThreadPoolExecutor(len(bodies) * 3) as pool:
        together = list(pool.map(lambda b: generate(serve_url, **b), bodies * 3))
    for i, answer in enumerate(together):
        assert answer["samples"] == alone[i % len(bodies)]["samples"]
