"""Shared fixtures: one local Ray for the whole session (ray.init ~5 s), the shared data dir, and
one S3-compatible server (moto's server mode on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from seqgen.data.presets import data_dir
from tests.processes import free_port, stop_group, wait_for_url

# Every Ray the tests start (the session's, `ray start` nodes, `seqgen` subprocesses) inherits
# these. Its log monitor, which publishes the lines of every log file to the drivers, otherwise
# lists the session's log directory for new files every 0.1 s; every 1 s, it spends a third of
# the CPU (measured once a run has left hundreds of log files), and a new file's lines still
# reach a job's driver within a second.
os.environ.setdefault("LOG_NAME_UPDATE_INTERVAL_S", "1")
os.environ.setdefault("RAY_LOG_MONITOR_MANY_FILES_THRESHOLD", "0")


@pytest.fixture(scope="session")
def ray_session():
    """The one local Ray of the session (2 CPUs, no dashboard, every socket on 127.0.0.1): started by
    the first test that needs it and shut down at the end of the session, or the one a test already
    started in this process (seqgen's ensure_ray), left as it is."""
    from seqgen.runtime import apply_local_env

    apply_local_env()  # before `import ray`: Ray reads its settings when it is imported
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def shared_data():
    d = data_dir()
    if d is None or not d.is_dir():
        pytest.skip("shared data directory not found: set SEQGEN_DATA_DIR to ../shared/data")
    return d


@pytest.fixture(scope="session")
def ptb_presets(shared_data, tmp_path_factory):
    """The ptb-char and ptb-word presets built once for the session, in one process (local storage,
    no Ray): (storage, {name: manifest}). The reference the tests of other sources compare with."""
    from seqgen.data.presets import text_preset
    from seqgen.data.text import preprocess_text
    from seqgen.storage import Storage

    if not (shared_data / "text" / "ptb").is_dir():
        pytest.skip(f"Penn Treebank not found under {shared_data}/text/ptb")
    storage = Storage.from_url(str(tmp_path_factory.mktemp("ptb-presets")))
    return storage, {name: preprocess_text(storage, name, text_preset(name), use_ray=False)
                     for name in ("ptb-char", "ptb-word")}


def pytest_configure(config):
    from seqgen.numerics import apply_batch_invariance

    apply_batch_invariance()  # before the session's first matrix product (seqgen/numerics.py)
    # Tests run tiny models: one thread avoids OpenMP oversubscription on shared 2-core boxes,
    # in this process and in the training subprocesses the tests start.
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    # Ray Train's controller collects the workers' reports every 2 s, and a worker waits for that
    # at every checkpoint: most of a tiny test run's time. Every 0.5 s here (the Rays and training
    # processes the tests start inherit it); a test that kills a run between checkpoints still
    # has several seconds between them (test clusters keep Ray's 2 s, tests/integration/cluster.py).
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    # Every Ray Train run starts an actor that watches for its nodes being drained (spot
    # preemption): a process of its own, ~4 CPU-s a run. No test drains a node (the node-kill
    # test kills one, which Ray Train's own failure handling answers).
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    if not hasattr(config, "workerinput"):  # once per run: xdist's workers start after the controller
        _compile_seqgen()


def _compile_seqgen() -> None:
    """Compile seqgen's modules to bytecode once, as installing a package does. These machines set
    PYTHONDONTWRITEBYTECODE=1, so no process would cache it, and each of the ~100 processes the
    suite starts (engine processes, replicas, Ray Train workers, trials, CLI runs) would compile
    seqgen's sources again: ~0.15 CPU-s each."""
    if sys.dont_write_bytecode:
        import compileall

        import seqgen

        compileall.compile_dir(Path(seqgen.__file__).parent, quiet=2)


# ---------------------------------------------------------------------------------------------
# Markers (registered in pyproject.toml). `pytest -m "not slow"` is the quick tier: the in-process
# unit tests, under 2 minutes on 2 cores.
#
# A test that uses one of these fixtures, directly or through other fixtures, gets their markers.
FIXTURE_MARKERS = {
    "ray_session": ("ray",),  # the session's local Ray (ray.init ~5 s)
    "serve_started": ("ray", "serve"),  # Serve on that Ray (~8 s to start)
    "cluster": ("ray", "cluster"),  # `ray start` nodes of our own (tests/integration)
    "s3": ("s3",),  # moto's S3 server, a process of its own
}
# Tests that start such things without those fixtures: asked for by name while the test runs
# (request.getfixturevalue), or in a process of their own. Keys as in SLOW.
MARKERS = {
    "tests/serve/test_schemathesis.py": ("ray", "serve"),
    "tests/serve/test_ingress.py::test_seqgen_serve_behind_haproxy": ("ray", "serve"),  # `seqgen serve`
}
# Every test marked with one of these is slow ...
SLOW_MARKERS = {"ray", "serve", "cluster", "s3"}
# ... and so are these, each measured above ~2 s on the 2-core box (`--durations`). A key is a
# file, a test (all its parameters), a node id, or "file::*[param]" (that parameter of every test
# in the file). A test that starts Ray in this process without being marked `ray` fails
# (_ray_needs_a_marker below).
SLOW = {
    # processes of their own: an engine process per test, fresh interpreters, scripts
    "tests/serve/test_engine.py::*[process]",
    "tests/serve/test_engine.py::test_a_dead_engine_process_fails_its_requests_and_reports_itself",
    "tests/serve/test_engine.py::test_the_engine_process_exits_when_its_replica_is_gone",
    "tests/serve/test_engine.py::test_an_engine_process_that_cannot_start_says_why",
    "tests/test_dependencies.py::test_low_module_imports_nothing_above_it",
    "tests/test_docs_commands.py::test_documented_scripts_show_help",
    "tests/test_cli_errors.py::test_training_a_run_that_is_being_trained_is_one_line",
    "tests/train/test_regularizers.py::test_two_ddp_workers_keep_identical_sigmas",  # two DDP processes
    # waiting on purpose: requests that take seconds to show their order
    "tests/serve/test_engine.py::test_short_request_joining_a_long_one_finishes_first",
    "tests/serve/test_engine.py::test_request_level_batching_holds_a_short_request_back",
    # preprocessing real corpora, tiny training, sampling long lines
    "tests/data/test_sources.py::test_ptb_char_from_memory_url_equals_the_preset",
    "tests/data/test_text_preprocess.py::test_ptb_char_preset",
    "tests/data/test_text_preprocess.py::test_ptb_word_preset",
    "tests/data/test_hutter.py::test_task_streams_read_lazily_the_windows_of_batchify_and_resume_exactly",
    "tests/data/test_tokenizers.py::test_preprocess_tiny_chunks_equal_one_chunk",
    "tests/handwriting/test_hw_dataset.py::test_idempotent_unless_forced",
    "tests/test_cli_commands.py::test_export_command",
    "tests/test_cli_commands.py::test_sample_strokes_with_density",
    "tests/test_cli_commands.py::test_evaluate_handwriting_static_and_dynamic",
}


def _keys(item) -> list[str]:
    """The keys of MARKERS and SLOW that name ``item``."""
    path, _, name = item.nodeid.partition("::")
    param = name[name.index("["):] if "[" in name else None
    keys = [path, f"{path}::{name.split('[')[0]}", item.nodeid]
    return keys + [f"{path}::*{param}"] if param else keys


@pytest.hookimpl(tryfirst=True)  # before -m deselects by these markers
def pytest_collection_modifyitems(config, items):
    used = set()
    for item in items:
        had = {m.name for m in item.iter_markers()}
        names = set(had)
        for fixture, markers in FIXTURE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                names.update(markers)
        for key in _keys(item):
            if key in MARKERS:
                used.add(key)
                names.update(MARKERS[key])
            if key in SLOW:
                used.add(key)
                names.add("slow")
        if names & SLOW_MARKERS:
            names.add("slow")
        for marker in sorted(names - had):
            item.add_marker(marker)
        group = _xdist_group(item, names, used)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
    if hasattr(config, "workerinput"):  # an xdist worker: every worker sorts the same way
        # Longest first: the scheduler hands out the groups first (largest first), then the other
        # tests in this order; the quick tests last fill the gaps instead of a long test ending
        # the run alone.
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    # A renamed or removed test must not leave the quick tier silently slower: in a run of the
    # whole suite every key of SLOW and MARKERS must name collected tests.
    if [str(a) for a in config.args] == config.getini("testpaths"):
        stale = sorted((SLOW | set(MARKERS) | set(GROUPS)) - used)
        if stale:
            raise pytest.UsageError(f"tests/conftest.py names tests that do not exist: {stale}")


# ---------------------------------------------------------------------------------------------
# Parallel runs: pyproject's addopts run the suite on pytest-xdist workers (`-n 2 --dist loadgroup`).
# Every worker is a pytest session of its own, with its own session fixtures (its own local Ray,
# S3 server, ...). A group runs whole on one worker, in collection order; every other test goes to
# whichever worker is free. Groups:
#   serve:   every test on the session's Serve (tests/serve/conftest.py): one Serve and one tiny
#            training, not one per worker, and the worker shuts Serve down after the group's last
#            test (pytest_runtest_teardown there);
#   cluster: every test that starts `ray start` nodes of its own: one such cluster at a time, and
#            each module's cluster (a module fixture) started once.
GROUP_FIXTURES = {"serve_started": "serve"}
GROUP_MARKERS = {"cluster": "cluster"}
# Tests that use such a thing without the fixture (asked for by name while the test runs); keys as in SLOW.
GROUPS = {"tests/serve/test_schemathesis.py": "serve"}


def _xdist_group(item, markers: set[str], used: set[str]) -> str | None:
    for key in _keys(item):
        if key in GROUPS:
            used.add(key)
            return GROUPS[key]
    for fixture, group in GROUP_FIXTURES.items():
        if fixture in getattr(item, "fixturenames", ()):
            return group
    return next((group for marker, group in GROUP_MARKERS.items() if marker in markers), None)


# xdist's own loadgroup passes a test's group to its scheduler by appending "@group" to the test's
# node id, which pytest >= 9.2 (structured node ids) no longer lets it do: the groups are silently
# ignored (pytest-xdist issue 1386). So the groups travel another way: every worker writes
# {node id: group} to a file of the run (given to it in workerinput), and --dist loadgroup uses a
# scheduler of ours that reads it: xdist's loadscope scheduling with our groups as its scopes.
_GROUPS_FILE = "seqgen_groups_dir"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """The controller, for each worker it starts: where the worker writes the groups."""
    config = node.config
    if not hasattr(config, "_seqgen_groups_dir"):
        import tempfile

        config._seqgen_groups_dir = tempfile.mkdtemp(prefix="seqgen-xdist-groups-")
        config.add_cleanup(lambda: shutil.rmtree(config._seqgen_groups_dir, ignore_errors=True))
    node.workerinput[_GROUPS_FILE] = config._seqgen_groups_dir


@pytest.hookimpl(trylast=True, specname="pytest_collection_modifyitems")  # after every other hook
def pytest_write_xdist_groups(config, items):  # has changed, sorted or deselected the items
    directory = getattr(config, "workerinput", {}).get(_GROUPS_FILE)
    if directory is not None:
        groups = {item.nodeid: m.args[0] for item in items for m in item.iter_markers("xdist_group")}
        path = Path(directory) / f"{config.workerinput['workerid']}.json"
        path.with_suffix(".tmp").write_text(json.dumps(groups))
        path.with_suffix(".tmp").replace(path)  # whole or not at all


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        """xdist's loadscope scheduling (a scope runs whole on one worker, the largest first), a
        test's scope being its group, else the test alone."""

        groups: dict | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # first called once every worker has collected (and written)
                files = sorted(Path(config._seqgen_groups_dir).glob("*.json"))
                if not files:
                    raise RuntimeError("no xdist worker wrote its test groups (tests/conftest.py)")
                self.groups = json.loads(files[0].read_text())
            return f"group:{self.groups[nodeid]}" if nodeid in self.groups else nodeid

    return GroupScheduling(config, log)


@pytest.fixture(autouse=True)
def _ray_needs_a_marker(request):
    """A test that starts Ray in this process must be marked `ray` (a fixture of FIXTURE_MARKERS or
    the marker itself), or the quick tier would start Ray without anyone noticing."""
    before = _ray_running()
    yield
    if not before and _ray_running() and request.node.get_closest_marker("ray") is None:
        pytest.fail(f"{request.node.nodeid} started Ray but is not marked `ray` (tests/conftest.py)")


def _ray_running() -> bool:
    ray = sys.modules.get("ray")  # never imported by this check
    return ray is not None and hasattr(ray, "is_initialized") and ray.is_initialized()


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    env: dict  # what a process needs to reach this server (endpoint, dummy credentials, region)

    def url(self, prefix: str = "") -> str:
        """A fresh ``s3://bucket/<prefix>-<uuid>`` root, so tests never see each other's objects."""
        return f"s3://{self.bucket}/{prefix or 'root'}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """moto's S3 server on a free loopback port, a bucket, and AWS_ENDPOINT_URL + dummy credentials
    in this process's environment (botocore/s3fs and pyarrow both read them); processes started
    later (``ray start`` nodes, a local Ray's workers) inherit them."""
    import s3fs

    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    try:
        wait_for_url(f"{endpoint}/moto-api/", proc, 60, f"moto_server on {endpoint}", 0.2,
                     lambda: log.read_text()[-2000:])
        os.environ.update(env)
        # fsspec caches file system instances by their arguments, not the environment: one made
        # before AWS_ENDPOINT_URL was set (or for an earlier server) would talk to the wrong host.
        s3fs.S3FileSystem.clear_instance_cache()
        bucket = "seqgen-test"
        s3fs.S3FileSystem().mkdir(bucket)
        yield S3Server(endpoint, bucket, env)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        s3fs.S3FileSystem.clear_instance_cache()
        stop_group(proc, timeout=10)
