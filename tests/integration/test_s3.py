"""Storage on s3:// against a real S3-compatible server on 127.0.0.1 (moto's server mode, the
``s3`` fixture): both S3 clients reach it through AWS_ENDPOINT_URL, the pipeline runs on it, and a
dataset built from s3:// inputs equals the local preset's."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from typer.testing import CliRunner

from seqgen.cli import app
from seqgen.config import load
from seqgen.data.presets import text_preset
from seqgen.data.text import load_split, preprocess_text
from seqgen.storage import Storage

pytestmark = pytest.mark.s3
PTB_CHAR = [f"ptb.char.{s}.txt" for s in ("train", "valid", "test")]


def test_s3fs_and_pyarrow_reach_the_local_server(s3):
    import pyarrow.fs

    st = Storage.from_url(s3.url("clients"))
    assert st.url.startswith(f"s3://{s3.bucket}/") and st.shared_across_processes and not st.is_local
    path = st.path("datasets", "d", "manifest.json")
    st.write_json_atomic(path, {"a": 1})
    assert st.read_json(path) == {"a": 1}
    assert [p.rsplit("/", 1)[-1] for p in st.fs.ls(st.path("datasets", "d"), detail=False)] == ["manifest.json"]

    # pyarrow opens URLs the way Ray Train opens its storage_path: FileSystem.from_uri
    fs, key = pyarrow.fs.FileSystem.from_uri(st.url_of(path))
    assert isinstance(fs, pyarrow.fs.S3FileSystem)
    with fs.open_input_stream(key) as f:
        assert json.loads(f.read()) == {"a": 1}
    # what another process writes is seen at once: s3fs caches no listings (seqgen.storage)
    with fs.open_output_stream(key.rsplit("/", 1)[0] + "/other.json") as f:
        f.write(b"{}")
    assert sorted(p.rsplit("/", 1)[-1] for p in st.fs.ls(st.path("datasets", "d"), detail=False)) == [
        "manifest.json", "other.json"]


@pytest.mark.ray
def test_preprocess_train_sample_on_s3(s3, ray_session, tmp_path):
    from seqgen import checkpoint as ckpt
    from seqgen.train.run import train

    st = Storage.from_url(s3.url("pipeline"))
    m = preprocess_text(st, "shakespeare", text_preset("shakespeare"), use_ray=False)
    assert all(sh["sha256"] for s in m["splits"].values() for sh in s["shards"])
    cfg = load(overrides=["run_name=s3-run", "dataset=shakespeare", "model.hidden_size=16", "model.num_layers=2",
                          "train.batch_size=8", "train.seq_len=20", "train.max_steps=4", "train.eval_every=2",
                          "train.eval_tokens=1000", "train.num_workers=0", "train.progress=false"])
    result = train(cfg, st)
    assert result.run_url == st.url_of(st.run_dir("s3-run")) and result.run_url.startswith("s3://")
    assert [u.rsplit("/", 1)[-1] for u in ckpt.list_checkpoints(result.run_url)][-1] == "checkpoint_00000004"
    assert st.exists(st.path("runs", "s3-run", "metrics.csv"))

    out = CliRunner().invoke(app, ["sample", "s3-run", "--storage", st.url, "--prompt", "ROMEO:", "--length", "30",
                                   "--seed", "3"])
    assert out.exit_code == 0 and out.output.startswith("ROMEO:"), out.output
    assert len(out.output.strip()) >= len("ROMEO:") + 20

    # the other commands that read storage, on the same s3:// root
    def cli(*args):
        result = CliRunner().invoke(app, [*args, "--storage", st.url])
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result.stdout

    scores = json.loads(cli("evaluate", "s3-run", "--split", "valid"))
    assert scores["static"]["valid_bpc"] > 0
    assert json.loads(cli("score", "s3-run", "To be, or not to be"))["tokens"] > 0
    assert json.loads(cli("runs", "--json"))[0]["name"] == "s3-run"
    assert json.loads(cli("datasets", "--json"))[0]["name"] == "shakespeare"
    assert json.loads(cli("inspect", "s3-run", "--json"))["checkpoint"].startswith("s3://")
    exported = tmp_path / "step.pt"
    cli("export", "s3-run", "--format", "torchscript", "--out", str(exported))
    assert exported.stat().st_size > 0


@pytest.mark.data
def test_ptb_char_from_s3_equals_the_preset(s3, shared_data, ptb_presets):
    """The ptb-char preset with its files on s3:// (``--data-dir s3://...``), written to s3://,
    is the very dataset the local preset gives. (In this process: Ray tasks reading and writing
    s3:// are the cluster test's preprocessing job; the command line's options for the preset's
    settings, tests/data/test_sources.py.)"""
    import s3fs

    src = f"{s3.bucket}/ptb-{uuid.uuid4().hex[:8]}"
    fs = s3fs.S3FileSystem()
    for name in PTB_CHAR:
        fs.put_file(str(shared_data / "text" / "ptb" / name), f"{src}/text/ptb/{name}")
    local, reference = ptb_presets[0], ptb_presets[1]["ptb-char"]

    st = Storage.from_url(s3.url("ptb"))
    spec = text_preset("ptb-char", f"s3://{src}")
    assert spec.files["train"] == [f"s3://{src}/text/ptb/{PTB_CHAR[0]}"]
    built = preprocess_text(st, "chars", spec, use_ray=False)
    assert built["fingerprint"] == reference["fingerprint"] and built["vocab"] == reference["vocab"]
    for split, info in reference["splits"].items():
        assert [sh["sha256"] for sh in built["splits"][split]["shards"]] == [sh["sha256"] for sh in info["shards"]]
        np.testing.assert_array_equal(load_split(st, built, split), load_split(local, reference, split))

