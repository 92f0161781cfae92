"""Every user error is one line on stderr naming the thing and what to do, with exit code 2 — never
a traceback. Each case runs through the real CLI (typer's CliRunner, in-process) on real files; a
run being trained by another process is tried as a user meets it, with `seqgen` in a process of
its own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from seqgen import checkpoint as ckpt
from seqgen import config
from seqgen.cli import app
from seqgen.models import build_model
from seqgen.storage import Storage, join
from tiny_storage import handwriting_checkpoint, handwriting_dataset, text_checkpoint, text_dataset

runner = CliRunner()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Local storage (a directory, so checkpoint files can be damaged by hand) with a char dataset,
    a text run, a handwriting prediction run and a run whose model.pt belongs to another config."""
    tmp = tmp_path_factory.mktemp("errors")
    st = Storage.from_url(str(tmp / "store"))
    manifest = text_dataset(st, tmp)
    text_checkpoint(st, manifest, run="good")
    handwriting_checkpoint(st, handwriting_dataset(st, tmp), run="pen")
    # "foreign": config.json says hidden_size=16, model.pt holds a hidden_size=32 network, and the
    # manifest vouches for both (as if saved that way): only loading the state dict can tell
    cfg = config.load(None, ["run_name=foreign", "dataset=tiny", "model.hidden_size=16"])
    other = config.load(None, ["run_name=foreign", "dataset=tiny", "model.hidden_size=32"])
    meta = {"kind": "text", "dataset": "tiny", "vocab": manifest["vocab"], "chars_per_token": 1.0}
    url = join(st.run_dir("foreign"), ckpt.checkpoint_name(2))
    ckpt.save(url, cfg, meta, build_model(other, meta).state_dict(), {}, {"step": 2, "evals": []})
    return st, tmp


def run(st, *args):
    result = runner.invoke(app, [*args, "--storage", st.url])
    return result.exit_code, result.stderr.strip(), result


def assert_one_line(code, err, result, *fragments):
    assert code == 2, (code, result.output, result.exception)
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in err, err


def damaged_copy(st, tmp, name, edit):
    """A copy of run 'good' with one file of its checkpoint changed by ``edit(bytes) -> bytes``."""
    src = ckpt.list_checkpoints(st.url_of(st.run_dir("good")))[-1]
    dst = tmp / "damaged" / name
    shutil.copytree(src, dst)
    path = dst / "model.pt"
    path.write_bytes(edit(path.read_bytes()))
    return str(dst)


def test_missing_checkpoint_directory(root, tmp_path):
    st, _ = root
    missing = str(tmp_path / "no" / "such" / "checkpoint")
    assert_one_line(*run(st, "sample", missing), f"checkpoint not found: {missing}", "`seqgen runs`")


def test_unknown_run_name(root):
    st, _ = root
    assert_one_line(*run(st, "inspect", "no-such-run"), "no run 'no-such-run'", "`seqgen runs` lists them")


def test_a_directory_that_is_not_a_checkpoint(root, tmp_path):
    st, _ = root
    (tmp_path / "notes.txt").write_text("hello")
    assert_one_line(*run(st, "evaluate", str(tmp_path)), f"{tmp_path} is not a checkpoint (no manifest.json)")


def test_model_pt_from_another_config(root):
    st, _ = root
    assert_one_line(*run(st, "sample", "foreign", "--length", "5"), "model.pt does not fit its config.json",
                    "size mismatch", "runs/foreign/checkpoint_00000002")


def test_model_pt_copied_from_another_checkpoint(root):
    st, tmp = root
    foreign = ckpt.list_checkpoints(st.url_of(st.run_dir("foreign")))[-1]
    with open(f"{foreign}/model.pt", "rb") as f:
        other = f.read()
    path = damaged_copy(st, tmp, "copied", lambda _: other)
    assert_one_line(*run(st, "inspect", path), f"checkpoint {path} is damaged: model.pt")


def test_same_size_corrupted_model_pt(root):
    st, tmp = root

    def flip(data: bytes) -> bytes:  # same size, a few bytes in the middle of the weights changed
        mid = len(data) // 2
        return data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + 8]) + data[mid + 8 :]

    path = damaged_copy(st, tmp, "flipped", flip)
    assert_one_line(*run(st, "sample", path, "--length", "5"), f"checkpoint {path} is damaged",
                    "model.pt does not match its sha256", "name another checkpoint of its run")


def test_truncated_manifest(root):
    st, tmp = root
    path = damaged_copy(st, tmp, "manifest", lambda d: d)
    (tmp / "damaged" / "manifest" / "manifest.json").write_text('{"format": 2, "fi')
    assert_one_line(*run(st, "inspect", path), f"checkpoint {path} is damaged: manifest.json is unreadable")


def test_evaluate_on_a_missing_dataset(root):
    st, _ = root
    assert_one_line(*run(st, "evaluate", "good", "--dataset", "nope"), "dataset 'nope' not found",
                    "`seqgen preprocess`")


def test_evaluate_on_a_missing_split_and_a_foreign_dataset(root):
    st, _ = root
    assert_one_line(*run(st, "evaluate", "good", "--split", "dev"), "dataset 'tiny' has no 'dev' split", "--split")
    assert_one_line(*run(st, "evaluate", "good", "--dataset", "hw"), "is a text model but dataset 'hw' is a "
                                                                     "handwriting dataset")


def test_evaluate_on_a_damaged_dataset(root):
    st, tmp = root
    shutil.copytree(tmp / "store" / "datasets" / "tiny", tmp / "store" / "datasets" / "tiny2")
    manifest_path = tmp / "store" / "datasets" / "tiny2" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["name"] = "tiny2"
    manifest_path.write_text(json.dumps(manifest))
    shard = tmp / "store" / "datasets" / "tiny2" / manifest["splits"]["test"]["shards"][0]["path"]
    data = shard.read_bytes()
    shard.write_bytes(data[:100] + bytes(b ^ 0xFF for b in data[100:108]) + data[108:])
    assert_one_line(*run(st, "evaluate", "good", "--dataset", "tiny2"), "dataset 'tiny2' is damaged", "sha256")


@pytest.mark.parametrize("args, fragments", [
    (["sample", "good", "--beam", "2", "--n", "3"], ["--beam cannot honour --n:", "sample without --beam"]),
    (["sample", "good", "--beam", "2", "--temperature", "0.5", "--top-k", "3", "--seed", "1"],
     ["--beam cannot honour --temperature, --top-k, --seed"]),
    (["sample", "good", "--density", "d.png"], ["a text model cannot honour --density"]),
    (["sample", "pen", "--temperature", "0.7"], ["handwriting sampling cannot honour --temperature", "--bias"]),
    (["score", "pen", "abc"], ["score needs a text model"]),
    (["write", "hello", "--checkpoint", "good"], ["write needs a handwriting_synthesis checkpoint"]),
    (["export", "good", "--format", "tflite", "--out", "x"], ["unknown export format 'tflite'"]),
    (["evaluate", "good", "--max-lines", "3"], ["a text model cannot honour --max-lines: use --max-tokens"]),
    (["evaluate", "pen", "--dataset", "hw", "--seq-len", "50"], ["a handwriting model cannot honour --seq-len"]),
    (["train", "model.hidden=3"], ["unknown config key 'model.hidden'"]),
])
def test_bad_option_combinations(root, args, fragments):
    st, _ = root
    assert_one_line(*run(st, *args), *fragments)


def test_a_bug_keeps_its_traceback(root, monkeypatch):
    """Only user errors are mapped: an unexpected exception still surfaces with its traceback."""
    import seqgen.catalog

    def boom(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(seqgen.catalog, "list_runs", boom)
    code, _, result = run(root[0], "runs")
    assert code == 1 and isinstance(result.exception, ZeroDivisionError)


@pytest.mark.ray
def test_ray_train_failure_is_one_line(ray_session, tmp_path):
    """A worker's error inside a real Ray Train run (1 worker process) reaches the user as its own
    message: a dataset whose shard was damaged after it was built, which only reading it finds."""
    from seqgen.data.shards import shard_path
    from tests.tiny_storage import text_dataset

    st = Storage.from_url(str(tmp_path / "store"))
    manifest = text_dataset(st, tmp_path)
    st.fs.pipe_file(shard_path(st, manifest, manifest["splits"]["train"]["shards"][0]), b"not a shard")
    code, err, result = run(st, "train", "run_name=fails", "dataset=tiny", "model.hidden_size=8",
                            "train.num_workers=1", "train.max_failures=0", "train.max_steps=2", "train.progress=false")
    assert_one_line(code, err, result, "failed in Ray", "dataset 'tiny' is damaged", "seqgen preprocess tiny --force")


@pytest.fixture
def ray_must_not_start(monkeypatch):
    """`seqgen.train.run.train` with a Ray start that fails the test (an AssertionError: a bug, not
    a user error, so the CLI keeps its traceback and exit code 1)."""
    import seqgen.train.run

    def no_ray(*a, **k):
        raise AssertionError("train started Ray before refusing the run")

    monkeypatch.setattr(seqgen.train.run, "ensure_ray", no_ray)


def test_a_missing_dataset_is_named_before_ray_starts(tmp_path, ray_must_not_start):
    """`train` reads the dataset's manifest before it starts Ray: a dataset that is not there is one
    line at once, not a worker group's failure."""
    code, err, result = run(Storage.from_url(str(tmp_path / "store")), "train", "run_name=r", "dataset=nowhere",
                            "train.num_workers=1")
    assert_one_line(code, err, result, "dataset 'nowhere' not found", "seqgen preprocess")


def test_user_error_unwraps_ray_train_and_keeps_bugs():
    """The mapping on Ray's own exception classes: a worker group's failure is reported by its
    worker's message; a connection failure names what to check; a bug is not a user error."""
    from ray.train import WorkerGroupError

    from seqgen.cli.errors import user_error

    failed = WorkerGroupError("worker 1 failed", {1: FileNotFoundError("dataset 'x' not found under /s")})
    assert user_error(failed).startswith("failed in Ray: dataset 'x' not found under /s")
    assert "--address" in user_error(ConnectionError("Could not connect to 10.0.0.1:6379"))
    from seqgen.lease import LeaseHeld, LeaseLost

    assert user_error(LeaseHeld("run 'r' is being written by\n  h:1")) == "run 'r' is being written by h:1"
    assert user_error(LeaseLost("run 'r': lost the lease")) == "run 'r': lost the lease"
    assert user_error(KeyError("step")) is None and user_error(ZeroDivisionError()) is None


@pytest.mark.parametrize("args, fragments", [
    (["evaluate"], ["Missing argument 'checkpoint'", "evaluate --help`)"]),
    (["sample", "good", "--temprature", "1"], ["No such option: --temprature", "--temperature"]),
    (["evaluate", "good", "--dynamic-lr", "fast"], ["Invalid value for '--dynamic-lr'", "valid number"]),
    (["frobnicate"], ["No such command 'frobnicate'", "--help`)"]),
])
def test_usage_errors_are_one_line_too(root, args, fragments):
    """click's own errors (a missing argument, an unknown option or command, a value of the wrong
    type) take the same way as seqgen's."""
    st, _ = root
    assert_one_line(*run(st, *args), *fragments)


def test_training_a_run_that_is_being_trained_is_one_line(tmp_path):
    """A second `seqgen train` of a run whose lease a live writer holds (`seqgen.lease`): the
    lease's message on one line and exit code 2, from `seqgen` started as a user starts it (which
    answers before it would start a local Ray: below)."""
    from seqgen.lease import run_lease

    st = Storage.from_url(str(tmp_path / "store"))
    env = {**os.environ, "RAY_ADDRESS": "", "OMP_NUM_THREADS": "1"}
    with run_lease(st, "busy"):  # held by this process, which is alive: no takeover
        out = subprocess.run([sys.executable, "-m", "seqgen", "train", "run_name=busy", "--storage", st.url],
                             capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: run 'busy' is being written by"), out.stderr[-3000:]
    assert "lease" in errors[0] and "wait for it to finish" in errors[0]


def test_a_busy_run_is_refused_before_ray_starts(tmp_path, ray_must_not_start):
    """`train` takes the run's lease first: a run being trained elsewhere is refused without
    starting or joining a Ray."""
    import seqgen.train.run
    from seqgen.config import load
    from seqgen.lease import LeaseHeld, run_lease

    st = Storage.from_url(str(tmp_path / "store"))
    with run_lease(st, "busy"), pytest.raises(LeaseHeld, match="run 'busy' is being written by"):
        seqgen.train.run.train(load(None, ["run_name=busy"]), st)
