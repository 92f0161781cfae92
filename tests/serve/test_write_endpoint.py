"""The endpoint's handwriting route: a synthesis checkpoint served over real HTTP."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import pytest
import requests

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def hw_url(serve_url, tmp_path_factory):
    """A tiny, untrained synthesis network (random weights are enough for the HTTP contract)."""
    import torch
    from ray import serve

    from seqgen import config
    from seqgen.handwriting.iam import full_alphabet
    from seqgen.models import build_model
    from seqgen.serve.app import build_app
    from seqgen import checkpoint as ckpt

    cfg = config.load(None, ["run_name=hw-tiny", "model.kind=handwriting_synthesis", "model.hidden_size=16",
                             "model.num_layers=1", "model.mixture_components=3", "model.window_components=2"])
    meta = {"kind": "handwriting_synthesis", "dataset": "iam", "offset_mean": [5.0, 0.0], "offset_std": [20.0, 20.0],
            "alphabet": full_alphabet(["hello world, abc"]).to_json()}
    torch.manual_seed(0)
    url = str(tmp_path_factory.mktemp("hw") / "checkpoint_00000000")
    ckpt.save(url, cfg, meta, build_model(cfg, meta).state_dict(), {}, {"step": 0, "evals": []})
    serve.run(build_app(url, num_cpus=0.25), name="seqgen-hw", route_prefix="/hw")
    base = serve_url + "/hw"
    deadline = time.time() + 30
    while requests.get(f"{base}/healthz", timeout=5).status_code != 200 and time.time() < deadline:
        time.sleep(0.2)
    yield base
    serve.delete("seqgen-hw")


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
