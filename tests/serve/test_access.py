"""Request ids, API keys, the access log and the latency metrics of a real Serve deployment over
real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pytest
import requests

from seqgen.serve.request_ids import well_formed
from tests.serve.conftest import KEY, deploy

pytestmark = pytest.mark.ray

TIMEOUT = 60
def ids(response: requests.Response) -> list[str]:
    """Every X-Request-Id value of an answer (repeated headers come joined by ', ')."""
    return [v.strip() for v in response.headers.get("x-request-id", "").split(",") if v.strip()]


def test_a_well_formed_request_id_is_echoed_on_answers_errors_and_streams(serve_url):
    rid = "client-id_1." + uuid.uuid4().hex
    h = {"X-Request-Id": rid}
    ok = requests.post(f"{serve_url}/generate", json={"length": 5, "seed": 1}, headers=h, timeout=TIMEOUT)
    assert ok.status_code == 200 and ids(ok) == [rid]
    bad = requests.post(f"{serve_url}/generate", json={"length": "5"}, headers=h, timeout=TIMEOUT)
    assert bad.status_code == 422 and ids(bad) == [rid]
    unknown = requests.post(f"{serve_url}/generate", json={"prompt": "\u263a"}, headers=h, timeout=TIMEOUT)
    assert unknown.status_code == 400 and ids(unknown) == [rid]
    missing = requests.get(f"{serve_url}/no-such-route", headers=h, timeout=TIMEOUT)
    assert missing.status_code == 404 and ids(missing) == [rid]
    with requests.post(f"{serve_url}/generate", json={"length": 20, "stream": True}, headers=h, stream=True,
                       timeout=TIMEOUT) as stream:
        assert stream.status_code == 200 and ids(stream) == [rid]
        assert "event: done" in stream.text


@pytest.mark.parametrize("sent", ["x" * 129, "has space", "semi;colon", "new%0Aline"])
def test_a_malformed_request_id_is_replaced(serve_url, sent):
    r = requests.get(f"{serve_url}/info", headers={"X-Request-Id": sent}, timeout=TIMEOUT)
    assert r.status_code == 200
    assert len(ids(r)) == 1 and ids(r)[0] != sent and well_formed(ids(r)[0])


def test_a_request_without_an_id_gets_a_fresh_one(serve_url):
    a, b = (requests.get(f"{serve_url}/info", timeout=TIMEOUT) for _ in range(2))
    assert len(ids(a)) == len(ids(b)) == 1 and ids(a) != ids(b) and well_formed(ids(a)[0])


def test_with_keys_every_route_but_health_and_the_page_needs_one(keyed_url):
    for headers, why in (({}, "requires an API key"), ({"Authorization": "Bearer wrong"}, "invalid API key"),
                         ({"Authorization": KEY}, "invalid API key")):
        for method, route in (("post", "/generate"), ("post", "/score"), ("get", "/info"), ("get", "/stats"),
                              ("get", "/openapi.json"), ("get", "/no-such-route")):
            r = requests.request(method, f"{keyed_url}{route}", json={"text": "a"}, headers=headers, timeout=TIMEOUT)
            assert r.status_code == 401, (route, headers, r.text)
            assert r.headers["WWW-Authenticate"] == "Bearer"
            assert r.json()["error"] == "unauthorized" and why in r.json()["message"]
            assert KEY not in r.text
    assert requests.get(f"{keyed_url}/healthz", timeout=TIMEOUT).status_code == 200
    page = requests.get(f"{keyed_url}/", timeout=TIMEOUT)
    assert page.status_code == 200 and "<html" in page.text.lower()
    for key in (KEY, "another-key"):
        r = requests.post(f"{keyed_url}/generate", json={"length": 5, "seed": 3},
                          headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT)
        assert r.status_code == 200, r.text


def serve_logs() -> Path:
    import ray

    return Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"


def access_lines(rid: str, deadline_s: float = 30) -> list[dict]:
    """The JSON access-log lines of request ``rid`` in the replicas' log files (waits for them)."""
    end = time.time() + deadline_s
    while True:
        found = []
        for path in serve_logs().glob("replica_*seqgen-keyed*.log"):
            for line in path.read_text(errors="replace").splitlines():
                if rid in line and line.startswith("{"):
                    entry = json.loads(line)
                    if "access" in entry:
                        found.append(entry)
        if found or time.time() > end:
            return found
        time.sleep(0.5)


def test_the_access_log_has_one_json_line_per_request_and_never_the_key(keyed_url):
    auth = {"Authorization": f"Bearer {KEY}"}
    rid = "log-" + uuid.uuid4().hex
    r = requests.post(f"{keyed_url}/generate", json={"length": 30, "seed": 5}, timeout=TIMEOUT,
                      headers={**auth, "X-Request-Id": rid})
    assert r.status_code == 200
    (line,) = access_lines(rid)
    access = line["access"]
    assert line["request_id"] == rid == access["request_id"]  # Serve's own field and ours agree
    assert access["route"] == "/generate" and access["status"] == 200 and access["model"] == "serve-tiny"
    assert access["symbols"] == 30
    assert 0 <= access["queue_wait_s"] <= access["first_symbol_s"] <= access["total_s"]

    refused = "refused-" + uuid.uuid4().hex
    assert requests.get(f"{keyed_url}/info", headers={"X-Request-Id": refused, "Authorization": "Bearer wrong-key"},
                        timeout=TIMEOUT).status_code == 401
    (line,) = access_lines(refused)
    assert line["access"]["status"] == 401 and line["access"]["route"] == "/info"

    for path in serve_logs().glob("replica_*seqgen-keyed*"):
        text = path.read_text(errors="replace")
        assert KEY not in text and "wrong-key" not in text


def samples(metrics_url: str, name: str, application: str) -> list[tuple[dict, float]]:
    """(labels, value) of metric ``name``'s series in one application's replicas (Prometheus text)."""
    found = []
    for line in requests.get(metrics_url, timeout=TIMEOUT).text.splitlines():
        if line.startswith(name + "{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name):line.rindex("}")]))
            if labels.get("application") == application:
                found.append((labels, float(line.rsplit(" ", 1)[1])))
    return found


def histogram_counts(metrics_url: str, name: str, application: str) -> dict[str, float]:
    """``name``'s observation counts per route in one application's replicas."""
    counts: dict[str, float] = {}
    for labels, value in samples(metrics_url, f"ray_{name}_count", application):
        counts[labels["route"]] = counts.get(labels["route"], 0.0) + value
    return counts


def test_n_requests_are_n_observations_of_each_histogram(serve_url, serve_started, tiny_checkpoint, metrics_url):
    url = deploy(serve_started, tiny_checkpoint, "seqgen-metrics", "/metrics-test", max_streams=4, max_queued=4)
    names = ("seqgen_request_seconds", "seqgen_queue_wait_seconds", "seqgen_time_to_first_symbol_seconds",
             "seqgen_symbols_per_request")
    n = 7
    for i in range(n):
        assert requests.post(f"{url}/generate", json={"length": 10, "seed": i}, timeout=TIMEOUT).ok
    assert requests.get(f"{url}/info", headers={"Authorization": "Bearer not-needed"}, timeout=TIMEOUT).ok
    assert requests.post(f"{url}/generate", json={"length": -1}, timeout=TIMEOUT).status_code == 422
    expected = {"seqgen_request_seconds": {"/generate": n + 1, "/info": 1}}  # /healthz is not counted
    expected.update({name: {"/generate": n} for name in names[1:]})  # only requests the engine answered
    deadline = time.time() + 60  # Ray's metrics agent exports every few seconds
    while True:
        counts = {name: histogram_counts(metrics_url, name, "seqgen-metrics") for name in names}
        if counts == expected or time.time() > deadline:
            break
        time.sleep(1)
    assert counts == expected
    statuses = {(labels["route"], labels["model"], labels["status"]): value
                for labels, value in samples(metrics_url, "ray_seqgen_http_requests_total", "seqgen-metrics")}
    assert statuses == {("/generate", "serve-tiny", "200"): n, ("/generate", "", "422"): 1,
                        ("/info", "", "200"): 1}
    serve_delete("seqgen-metrics")


def serve_delete(app: str) -> None:
    from ray import serve

    serve.delete(app)
