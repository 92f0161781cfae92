"""deploy/grafana/seqgen-dashboard.json against the metrics a live server exports, both ways:
every metric a panel queries is exported, and every seqgen metric exported has a panel."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.ray

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "seqgen-dashboard.json"
SUFFIXES = ("_bucket", "_sum", "_count")


def family(name: str) -> str:
    """A histogram's series (``x_bucket``, ``x_sum``, ``x_count``) belong to ``x``."""
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def queried_metrics() -> set[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    return {m for e in exprs for m in re.findall(r"\b(ray_seqgen_\w+)", e)}


def exported_metrics(metrics_url: str) -> set[str]:
    text = requests.get(metrics_url, timeout=30).text
    return {m.group(1) for m in re.finditer(r"^(ray_seqgen_\w+)\{", text, re.M)}


def test_every_panel_queries_an_exported_metric_and_every_metric_has_a_panel(serve_url, metrics_url):
    # every kind of observation: a generation, a score (no symbols), a refused body
    assert requests.post(f"{serve_url}/generate", json={"length": 20}, timeout=60).ok
    assert requests.post(f"{serve_url}/score", json={"text": "To be"}, timeout=60).ok
    assert requests.post(f"{serve_url}/generate", json={"length": 0}, timeout=60).status_code == 422
    queried = queried_metrics()
    assert queried, "the dashboard queries no seqgen metric"
    deadline = time.time() + 60  # Ray's metrics agent exports every few seconds
    while not queried <= (exported := exported_metrics(metrics_url)) and time.time() < deadline:
        time.sleep(1)
    assert queried - exported == set(), "panels query metrics the server does not export"
    assert {family(m) for m in exported} - {family(m) for m in queried} == set(), "exported metrics without a panel"
