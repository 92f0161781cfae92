"""Fixtures for the serving tests: a tiny trained checkpoint and one Serve instance on the
session's local Ray (``ray_session``, tests/conftest.py).

Serve is shut down after the last test that uses it (`pytest_runtest_teardown`), and test replicas
reserve no CPUs, so the Ray Train tests that run after them find the CPUs they ask for.

Everything else is session-scoped: the tiny training (~ seconds) and Serve's start-up (~8 s,
overlapped with the training) are paid once for all serve tests.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.processes import free_port


@pytest.fixture(scope="session")
def serve_started(ray_session):
    """Start Serve's controller and HTTP proxy (127.0.0.1, a free port) in a background thread,
    overlapping its start-up with the tiny training; ``serve_url`` waits for it."""
    from ray import serve

    port = free_port()
    errors: list[BaseException] = []

    def start():
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
        except BaseException as e:  # re-raised by serve_url
            errors.append(e)

    thread = threading.Thread(target=start, name="serve-start", daemon=True)
    thread.start()
    yield port, thread, errors
    serve.shutdown()


@pytest.fixture(scope="session")
def tiny_checkpoint(ray_session, tmp_path_factory) -> str:
    """A real checkpoint: Tiny Shakespeare, 2 x 32 LSTM, 5 steps of training in-process."""
    from seqgen import config
    from seqgen.catalog import find_checkpoint
    from seqgen.data.presets import text_preset
    from seqgen.data.text import preprocess_text
    from seqgen.storage import Storage
    from seqgen.train.run import train

    storage = Storage.from_url(str(tmp_path_factory.mktemp("serve-storage")))
    preprocess_text(storage, "shakespeare", text_preset("shakespeare"), use_ray=False)
    cfg = config.load(None, [
        "run_name=serve-tiny", "dataset=shakespeare", "train.num_workers=0", "model.hidden_size=32",
        "train.max_steps=5", "train.eval_every=5", "train.eval_tokens=2000", "train.seq_len=50",
        "train.progress=false",
    ])
    train(cfg, storage)
    return find_checkpoint(storage, "serve-tiny")


def deploy(serve_started, checkpoint: str | list[str], name: str, route_prefix: str, **kw) -> str:
    """Run one seqgen app on the shared Serve instance; its base URL once it answers."""
    import requests
    from ray import serve

    from seqgen.serve.app import build_app

    port, thread, errors = serve_started
    thread.join(timeout=120)
    if errors:
        raise errors[0]
    kw = {"num_cpus": 0, "flush_interval_s": 0.01, **kw}  # fine chunks: the streaming tests see several
    serve.run(build_app(checkpoint, **kw), name=name, route_prefix=route_prefix)
    url = f"http://127.0.0.1:{port}{route_prefix.rstrip('/')}"
    deadline = time.time() + 30
    while True:  # serve.run returns once the replica is up; the proxy may need a moment more
        try:
            if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                return url
        except requests.RequestException:
            pass
        if time.time() > deadline:
            raise RuntimeError(f"Serve did not answer on {url}")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def serve_url(ray_session, serve_started, tiny_checkpoint):
    """Base URL of a real Serve HTTP server on 127.0.0.1 serving the tiny checkpoint."""
    yield deploy(serve_started, tiny_checkpoint, "seqgen-test", "/", max_streams=32, max_queued=32)


@pytest.fixture(scope="session")
def small_url(serve_url, serve_started, tiny_checkpoint):
    """The tiny checkpoint behind a deliberately small engine: 2 streams, 2 waiting, 3 s deadlines;
    Serve checks its health every second (the engine-crash test waits for a replacement)."""
    yield deploy(serve_started, tiny_checkpoint, "seqgen-small", "/small", max_streams=2, max_queued=2, timeout_s=3.0,
                 health_check_period_s=1.0)


@pytest.fixture(scope="session")
def hw_url(serve_url, serve_started, tmp_path_factory):
    """The bundled handwriting synthesis model (real, 2 x 256) at /hw, with storage holding its
    dataset ("iam": one form of two lines, a01-000u-01 and -02), whose lines are styles too."""
    from seqgen.catalog import BUNDLED_HANDWRITING
    from seqgen.handwriting.dataset import preprocess_handwriting
    from seqgen.storage import Storage
    from tests.handwriting.test_hw_dataset import write_form

    tmp = tmp_path_factory.mktemp("hw-storage")
    storage = Storage.from_url(str(tmp / "storage"))
    write_form(tmp / "iam", "a01-000u", ["a move to stop", "mr gaitskell"], seed=1)
    preprocess_handwriting(storage, "iam", str(tmp / "iam"), use_ray=False)
    yield deploy(serve_started, str(BUNDLED_HANDWRITING), "seqgen-hw", "/hw", max_streams=32, max_queued=32,
                 storage=storage.url)


@pytest.fixture(scope="session")
def tiny_handwriting(tmp_path_factory) -> str:
    """An untrained 1 x 8 synthesis network with the bundled model's alphabet and statistics, run
    "handwriting-tiny": the same /write document as the bundle (its limits come from the alphabet).
    Its window moves two characters a point, so it ends a line after about half as many points as
    the line has characters (an untrained window at the data's pace never reaches the end: every
    line would run to the length limit, ~6 s for a 1,000-character page, and the schemathesis run
    over /multi writes several)."""
    import json

    from seqgen.catalog import BUNDLED_HANDWRITING
    from seqgen.storage import Storage
    from tests.handwriting.tiny_models import save_checkpoint

    meta = json.loads((BUNDLED_HANDWRITING / "meta.json").read_text())
    storage = Storage.from_url(str(tmp_path_factory.mktemp("tiny-handwriting")))
    return save_checkpoint(storage, "handwriting-tiny", "handwriting_synthesis", meta, chars_per_point=2.0)


@pytest.fixture(scope="session")
def multi_url(serve_url, serve_started, tiny_checkpoint, tiny_handwriting):
    """Three models behind one URL at /multi: the tiny text checkpoint (the default text model),
    the tiny handwriting network, and the bundled Shakespeare text model; at most 1,000 symbols a
    sample (``max_length``, stated in its OpenAPI document: the schemathesis run over it asks for
    no 5,000-symbol samples, ~5 s each)."""
    from seqgen.catalog import bundled

    yield deploy(serve_started, [tiny_checkpoint, tiny_handwriting, bundled("shakespeare")], "seqgen-multi",
                 "/multi", max_streams=16, max_queued=16, max_length=1000)


KEY = "test-key-9f2c41d7"  # one of keyed_url's API keys (a constant: conftest may be imported twice)


@pytest.fixture(scope="session")
def keyed_url(serve_url, serve_started, tiny_checkpoint):
    """The tiny checkpoint behind API keys (KEY and "another-key") at /keyed, logging JSON."""
    from seqgen.serve.api_keys import ApiKeys

    yield deploy(serve_started, tiny_checkpoint, "seqgen-keyed", "/keyed", max_streams=8, max_queued=8,
                 api_keys=ApiKeys.of([KEY, "another-key"]), log_format="json")


@pytest.fixture(scope="session")
def metrics_url(ray_session) -> str:
    """Prometheus endpoint of this node's Ray metrics agent (where Serve metrics are exported)."""
    import ray

    return f"http://127.0.0.1:{ray._private.worker._global_node.metrics_export_port}/metrics"


def pytest_runtest_teardown(item, nextitem):
    """After the last test on the session's Serve, in whatever order the tests run, stop Serve: its
    replicas would hold memory (and the session's Ray would keep them) through the rest of the
    session. Those tests are the xdist group "serve" (tests/conftest.py: the users of these fixtures,
    and the tests that ask for them by name); a group runs whole on one worker, in collection
    order, so its last item is the last to run there (also without xdist)."""
    if item is _last_serve_test(item.session):
        import ray

        if ray.is_initialized():
            from ray import serve

            serve.shutdown()


_LAST_SERVE_TEST = pytest.StashKey()


def _on_serve(item) -> bool:
    return any(m.args[:1] == ("serve",) or m.kwargs.get("name") == "serve" for m in item.iter_markers("xdist_group"))


def _last_serve_test(session):
    if _LAST_SERVE_TEST not in session.stash:  # the items as they run: selected, in their order
        here = [i for i in session.items if _on_serve(i)]
        session.stash[_LAST_SERVE_TEST] = here[-1] if here else None
    return session.stash[_LAST_SERVE_TEST]
