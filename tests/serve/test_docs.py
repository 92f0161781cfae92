"""Every request shown in docs/serving.md is sent to a real deployment and must succeed, so the
documentation cannot drift from the API."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.ray

DOC = Path(__file__).resolve().parents[2] / "docs" / "serving.md"


def documented_requests() -> list[tuple[str, dict]]:
    """(route, body) of every curl command in the doc's bash blocks."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), re.S)
    commands = [c for b in blocks for c in b.replace("\\\n", " ").splitlines() if c.strip().startswith("curl")]
    out = []
    for c in commands:
        route = re.search(r"http://127\.0\.0\.1:8000(/\w*)", c)[1]
        body = json.loads(re.search(r"-d '(.*?)'", c)[1])
        out.append((route, body))
    return out


def test_the_doc_shows_every_route():
    routes = {route for route, _ in documented_requests()}
    assert routes == {"/generate", "/score", "/write"}


@pytest.mark.parametrize("route, body", documented_requests())
def test_documented_request_works(route, body, multi_url):
    r = requests.post(f"{multi_url}{route}", json=body, timeout=120)  # every bundled model, the tiny one first
    assert r.status_code == 200, r.text
    if body.get("stream"):
        assert r.headers["content-type"].split(";")[0] in ("text/event-stream", "application/x-ndjson")
        assert "done" in r.text
    else:
        assert r.json()["model"]["kind"] in ("text", "handwriting_synthesis")
