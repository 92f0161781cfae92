"""The endpoint under load, over real HTTP on 127.0.0.1: poison, overload, disconnect, joining,
equal outputs alone / batched / joining, streaming, deadlines, styles, metrics and the per-model
OpenAPI document. Bounded in count and time; every client has a timeout."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
import requests

from tests.processes import wait_until

pytestmark = pytest.mark.ray

TIMEOUT = 60


def post(url: str, route: str, body, **kw) -> requests.Response:
    return requests.post(f"{url}{route}", json=body, timeout=kw.pop("timeout", TIMEOUT), **kw)


def sse_events(response: requests.Response) -> list[tuple[str, dict]]:
    events = []
    for block in response.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def stats(url: str) -> dict:
    return requests.get(f"{url}/stats", timeout=TIMEOUT).json()


@contextmanager
def running(url: str, body: dict):
    """A long request streamed, under way while the ``with`` lasts: leaving it closes the stream,
    which cancels the request, so a test that needs a batch running pays for no more of it than
    it uses. (The line iterator lives here: dropping it would close the stream at once.)"""
    with requests.post(f"{url}/generate", json={**body, "stream": True}, stream=True, timeout=TIMEOUT) as r:
        assert r.status_code == 200, r.text
        lines = r.iter_lines()
        while b"chunk" not in next(lines):
            pass
        yield r


def test_poison_request_does_not_fail_its_batch_mates(serve_url):
    ordinary = [{"prompt": "KING", "length": 120, "seed": i} for i in range(8)]
    poison = {"prompt": "KING", "length": 120, "temperature": 1e-40, "seed": 99}
    with ThreadPoolExecutor(9) as pool:
        responses = list(pool.map(lambda b: post(serve_url, "/generate", b), [*ordinary, poison]))
    assert [r.status_code for r in responses] == [200] * 9, [r.text for r in responses]
    greedy = post(serve_url, "/generate", {**poison, "temperature": 0.0}).json()["samples"]
    assert responses[-1].json()["samples"] == greedy  # a vanishing temperature is greedy
    for body, r in zip(ordinary, responses):  # and the others are what they are alone
        assert r.json()["samples"] == post(serve_url, "/generate", body).json()["samples"]


def test_overload_is_refused_at_once_and_health_stays_fast(small_url):
    """2 streams + 2 waiting: of 10 concurrent long requests, 4 are answered and 6 get 503 at once,
    and /healthz answers while the engine is busy. No clock limits (the box may be loaded): "at
    once" is before any admitted request has finished, "while busy" is the same window."""
    answered: list[float] = []  # when each /healthz was answered
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            assert requests.get(f"{small_url}/healthz", timeout=10).status_code == 200
            answered.append(time.monotonic())
            time.sleep(0.05)

    def one(i):
        r = post(small_url, "/generate", {"length": 800, "seed": i, "timeout_s": 60})
        return r, time.monotonic()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        start = time.monotonic()
        with ThreadPoolExecutor(10) as pool:
            results = list(pool.map(one, range(10)))
    finally:
        stop.set()
        watcher.join()
    codes = sorted(r.status_code for r, _ in results)
    assert codes == [200] * 4 + [503] * 6, [r.text for r, _ in results]
    first_done = min(t for r, t in results if r.status_code == 200)
    for r, t in results:
        if r.status_code == 503:
            assert t < first_done and int(r.headers["Retry-After"]) >= 1
            assert r.json()["error"] == "overloaded"
    assert any(start < t < first_done for t in answered), "no /healthz answer while the engine was busy"


def test_deadline_is_a_json_504(small_url):
    """The small deployment's default deadline is 3 s: a request that waits behind two long ones
    (each ~5,000 steps) and then needs 5,000 steps itself cannot make it."""
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(post, small_url, "/generate", {"length": 5000, "seed": i}) for i in range(3)]
        results = [f.result() for f in futures]
    late = [r for r in results if r.status_code == 504]
    assert late, [r.status_code for r in results]
    assert late[0].json()["error"] == "deadline_exceeded"
    assert stats(small_url)["requests"]["expired"] >= 1


def test_disconnect_frees_the_slot(serve_url):
    before = stats(serve_url)["requests"].get("cancelled", 0)
    with running(serve_url, {"length": 5000, "n": 4, "seed": 1}):
        pass  # generation is under way, and the client goes
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        s = stats(serve_url)
        if s["requests"].get("cancelled", 0) > before and s["running_rows"] == 0:
            break
        time.sleep(0.1)
    assert s["requests"].get("cancelled", 0) == before + 1 and s["running_rows"] == 0, s


def test_short_request_joining_a_long_one_finishes_first(serve_url):
    with running(serve_url, {"length": 5000, "seed": 3}):
        assert post(serve_url, "/generate", {"length": 20, "seed": 3}).status_code == 200
        assert stats(serve_url)["running_rows"] == 1  # the long one is still running


def test_equal_outputs_alone_batched_and_joining(serve_url, hw_url):
    body = {"prompt": "ROMEO:", "length": 150, "temperature": 0.9, "top_k": 20, "seed": 42, "n": 2}
    alone = post(serve_url, "/generate", body).json()["samples"]
    with ThreadPoolExecutor(6) as pool:  # in a batch
        batched = list(pool.map(lambda i: post(serve_url, "/generate", {**body, "seed": 42 + 10 * i}), range(6)))
    assert batched[0].json()["samples"] == alone
    with running(serve_url, {"length": 4000}):
        joining = post(serve_url, "/generate", body).json()["samples"]  # joins a running batch
    assert joining == alone

    write = {"text": "a quick fox", "bias": 0.5, "seed": 5}
    alone_hw = post(hw_url, "/write", write).json()["strokes"]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda i: post(hw_url, "/write", {**write, "seed": 5 + i}), range(4)))
    assert together[0].json()["strokes"] == alone_hw


def test_streamed_text_equals_the_plain_answer(serve_url):
    body = {"prompt": "ROMEO:", "length": 100, "seed": 8, "n": 2}
    plain = post(serve_url, "/generate", body).json()
    r = post(serve_url, "/generate", {**body, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r)
    assert events[0][0] == "start" and events[0][1]["seed"] == 8
    assert events[-1][0] == "done" and events[-1][1]["symbols"] == 200
    texts = ["", ""]
    for kind, data in events:
        if kind == "chunk":
            texts[data["sample"]] += data["text"]
    assert texts == plain["samples"] and len([e for e in events if e[0] == "chunk"]) > 2


def test_streamed_strokes_equal_the_plain_answer(hw_url):
    body = {"text": "hello", "bias": 1.0, "seed": 2}
    plain = post(hw_url, "/write", body).json()
    r = post(hw_url, "/write", {**body, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert lines[-1]["done"] and lines[-1]["points"] == plain["points"] and lines[-1]["seed"] == 2
    points = [p for line in lines[:-1] for p in line["points"]]
    assert points == plain["strokes"] and len(lines) > 2


def test_random_seed_is_returned_and_repeats(serve_url):
    first = post(serve_url, "/generate", {"length": 50}).json()
    again = post(serve_url, "/generate", {"length": 50, "seed": first["seed"]}).json()
    assert again["samples"] == first["samples"]


def test_styles_ship_with_the_package_and_come_from_the_servers_dataset(hw_url):
    r = post(hw_url, "/write", {"text": "hello", "style": 3, "seed": 1})
    assert r.status_code == 200 and r.json()["points"] > 0
    r = post(hw_url, "/write", {"text": "hello", "style": 99})
    assert r.status_code == 404 and r.json()["error"] == "not_found" and "0-12" in r.json()["message"]
    # with storage holding the model's dataset, its line ids are styles too (and listed in the schema)
    schema = requests.get(f"{hw_url}/openapi.json", timeout=TIMEOUT).json()
    style = schema["components"]["schemas"]["WriteBody"]["properties"]["style"]
    assert {"type": "string", "enum": ["a01-000u-01", "a01-000u-02"]} in style["anyOf"]
    r = post(hw_url, "/write", {"text": "hello", "style": "a01-000u-02", "seed": 1})
    assert r.status_code == 200 and r.json()["points"] > 0, r.text
    assert post(hw_url, "/write", {"text": "hello", "style": "a01-000u-09"}).status_code == 404


def test_openapi_document_is_per_model(serve_url, hw_url):
    text = requests.get(f"{serve_url}/openapi.json", timeout=TIMEOUT).json()
    hw = requests.get(f"{hw_url}/openapi.json", timeout=TIMEOUT).json()
    assert {"/generate", "/score"} <= set(text["paths"]) and "/write" not in text["paths"]
    assert "/write" in hw["paths"] and "/generate" not in hw["paths"]
    prompt = text["components"]["schemas"]["GenerateBody"]["properties"]["prompt"]
    assert prompt["pattern"].startswith("^[") and "R" in prompt["pattern"]
    responses = text["paths"]["/generate"]["post"]["responses"]
    assert {"200", "400", "413", "422", "500", "503", "504"} <= set(responses)
    assert "text/event-stream" in responses["200"]["content"]
    body = hw["components"]["schemas"]["WriteBody"]
    write = body["properties"]
    assert write["text"]["maxLength"] == 1000  # a page; its lines are at most the model's longest line
    assert {"type": "integer", "minimum": 10, "maximum": 60} in write["wrap"]["anyOf"]
    pattern = body["anyOf"][0]["properties"]["text"]["pattern"]  # unknown="error": only what the model writes
    assert "Z" not in pattern and "a" in pattern and body["anyOf"][1]["required"] == ["unknown"]
    assert "Z" not in hw["components"]["schemas"]["PrimeBody"]["properties"]["text"]["pattern"]
    assert write["style"]["anyOf"][0] == {"type": "integer", "minimum": 0, "maximum": 12}


def test_framework_errors_have_the_json_shape(serve_url):
    r = requests.post(f"{serve_url}/generate", data=b"\xff\x13\x80", headers={"content-type": "application/json"},
                      timeout=TIMEOUT)
    assert 400 <= r.status_code < 500 and r.json()["error"] in ("invalid_request",)
    r = requests.get(f"{serve_url}/nope", timeout=TIMEOUT)
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = requests.get(f"{serve_url}/generate", timeout=TIMEOUT)
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


def test_engine_statistics_are_exported_as_serve_metrics(serve_url, metrics_url):
    post(serve_url, "/generate", {"length": 30, "seed": 1})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the exporter publishes once a second; the agent scrapes
        text = requests.get(metrics_url, timeout=TIMEOUT).text
        names = {"ray_seqgen_batch_occupancy", "ray_seqgen_queue_length", "ray_seqgen_symbols_per_second",
                 "ray_seqgen_requests_total", "ray_seqgen_symbols_total"}
        if all(n in text for n in names):
            break
        time.sleep(0.5)
    assert all(n in text for n in names), [n for n in names if n not in text]
    assert 'outcome="completed"' in text


def test_autoscaling_adds_a_replica_under_load(serve_started, tiny_checkpoint, serve_url):
    """Serve autoscaling (min 1, max 2, one ongoing request per replica as the target): sustained
    concurrent load brings up the second replica, and both answer."""
    from ray import serve

    from tests.serve.conftest import deploy

    auto = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1, "upscale_delay_s": 0.5,
            "downscale_delay_s": 600, "metrics_interval_s": 0.2, "look_back_period_s": 1.0}
    url = deploy(serve_started, tiny_checkpoint, "seqgen-auto", "/auto", autoscale=auto, max_streams=8, max_queued=8)

    def replicas() -> dict:
        return serve.status().applications["seqgen-auto"].deployments["SeqgenServer"].replica_states

    try:
        stop = threading.Event()

        def load():
            while not stop.is_set():
                post(url, "/generate", {"length": 400})

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        # The load lasts until Serve has decided to scale out (a second replica starting): it
        # keeps the replica it started (downscale_delay_s), so the load need not wait, burning
        # CPU, while the new replica comes up.
        try:
            # (serve.status() pickles its request with cloudpickle, which scans every imported module:
            # tens of ms of CPU a call, so it is not polled faster)
            wait_until(lambda: sum(replicas().values()) == 2, 90, "Serve to start a second replica", 0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=TIMEOUT)
        wait_until(lambda: replicas().get("RUNNING") == 2, 90, "the second replica to run", 1)
        seen: set = set()
        deadline = time.monotonic() + 30  # routers learn of the new replica within a few seconds
        while len(seen) < 2 and time.monotonic() < deadline:
            seen.add(requests.get(f"{url}/stats", timeout=TIMEOUT).json()["replica"])
            time.sleep(0.1)
        assert len(seen) == 2, seen  # requests reach both replicas
    finally:
        serve.delete("seqgen-auto")


def test_a_replica_whose_engine_process_dies_is_replaced(small_url):
    """Kill the engine process under a running request: that request fails with the JSON 500, the
    replica answers 503 (Retry-After) until Serve's health check has replaced it, then 200 again.
    (A test on the small deployment after this one finds the replacement, answering.)"""
    import psutil

    def engines() -> list:
        return [p for p in psutil.process_iter(["cmdline"])
                if "seqgen.serve.engine_process" in " ".join(p.info["cmdline"] or [])
                and "seqgen-small" in " ".join(p.parent().cmdline())]

    (engine,) = engines()
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(post, small_url, "/generate", {"length": 5000, "seed": 1, "timeout_s": 60})
        while stats(small_url)["running_rows"] == 0:
            time.sleep(0.05)
        engine.kill()
        failed = running.result()
    assert failed.status_code == 500 and failed.json()["error"] == "generation_failed", failed.text
    assert "engine process exited" in failed.json()["message"]
    statuses, deadline = [], time.monotonic() + 90
    while time.monotonic() < deadline:
        r = post(small_url, "/generate", {"length": 10, "seed": 2})
        statuses.append(r.status_code)
        if r.status_code == 200:
            break
        assert r.status_code == 503 and r.json()["error"] == "unavailable" and "Retry-After" in r.headers, r.text
        time.sleep(0.2)
    assert statuses[0] == 503 and statuses[-1] == 200, statuses  # refused while down, then replaced
    (replacement,) = engines()
    assert replacement.pid != engine.pid
