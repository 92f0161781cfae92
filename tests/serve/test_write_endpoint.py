"""The endpoint's handwriting route: the bundled synthesis model served over real HTTP."""

from __future__ import annotations

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
