"""The endpoint's handwriting route: the bundled synthesis model served over real HTTP."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
import requests

pytestmark = pytest.mark.ray


def test_write_returns_svg_and_strokes(hw_url):
    r = requests.post(f"{hw_url}/write", json={"text": "hello", "bias": 1.0, "seed": 3}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    svg = ET.fromstring(body["svg"])
    assert svg.tag.endswith("svg") and len(body["strokes"]) == body["points"] > 0
    assert all(len(row) == 3 for row in body["strokes"])
    again = requests.post(f"{hw_url}/write", json={"text": "hello", "bias": 1.0, "seed": 3}, timeout=60).json()
    assert again["strokes"] == body["strokes"]  # same seed, same strokes


def test_write_rejects_unknown_characters_naming_them(hw_url):
    r = requests.post(f"{hw_url}/write", json={"text": "hello {Z}"}, timeout=30)
    assert r.status_code == 400
    assert set(r.json()["unknown_symbols"]) == {"{", "}", "Z"}


@pytest.mark.parametrize("body, status", [
    ({"text": "hello " * 20}, 400),  # longer than the model can write in its point budget
    ({"text": "a" * 500}, 422),  # over the hard request bound
    ({"text": ""}, 422),
    ({"text": "hello", "bias": -1}, 422),
    ({"text": "hello", "bias": "high"}, 422),
    ({"text": "hello", "colour": "red"}, 422),
])
def test_write_bad_requests_get_json_4xx(hw_url, body, status):
    r = requests.post(f"{hw_url}/write", json=body, timeout=30)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")


def test_text_routes_are_not_served_by_a_handwriting_model(hw_url):
    r = requests.post(f"{hw_url}/generate", json={"prompt": "a"}, timeout=30)
    assert r.status_code == 404 and "write" in r.json()["message"]


def test_best_of_writes_its_candidates_as_one_batch_and_answers_the_best_read(hw_url):
    before = requests.get(f"{hw_url}/stats", timeout=30).json()
    body = {"text": "hello", "bias": 0.75, "seed": 11, "best_of": 4}
    r = requests.post(f"{hw_url}/write", json=body, timeout=120)
    assert r.status_code == 200, r.text
    answer = r.json()
    after = requests.get(f"{hw_url}/stats", timeout=30).json()
    steps, symbols = after["steps"] - before["steps"], after["symbols_generated"] - before["symbols_generated"]
    assert symbols > 2 * steps  # four rows stepped together (one after another would make symbols == steps)
    chosen = answer["legibility"]
    assert chosen["candidates"] == 4 and 0 <= chosen["candidate"] < 4 and 0 <= chosen["cer"]
    assert isinstance(chosen["reading"], str)
    # candidate j used seed + j: written alone with that seed, it is the same line
    alone = requests.post(f"{hw_url}/write", json={"text": "hello", "bias": 0.75, "seed": 11 + chosen["candidate"]},
                          timeout=60).json()
    assert alone["strokes"] == answer["strokes"] and alone["legibility"] is None
    assert requests.post(f"{hw_url}/write", json=body, timeout=120).json() == answer  # seeded: the same answer


def test_best_of_streams_the_chosen_candidate_once_chosen(hw_url):
    body = {"text": "hello", "bias": 0.75, "seed": 11, "best_of": 2}
    whole = requests.post(f"{hw_url}/write", json=body, timeout=120).json()
    r = requests.post(f"{hw_url}/write", json={**body, "stream": True}, timeout=120)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    points, done = [json.loads(line) for line in r.text.splitlines()]
    assert points["points"] == whole["strokes"]
    assert done["done"] and done["legibility"] == whole["legibility"] and done["points"] == whole["points"]


def test_best_of_limits(hw_url):
    r = requests.post(f"{hw_url}/write", json={"text": "hello", "best_of": 9}, timeout=30)
    assert r.status_code == 422 and "best_of" in r.text, r.text
