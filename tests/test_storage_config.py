"""Storage names/paths/atomic writes, and strict configuration (YAML + overrides)."""

from __future__ import annotations

import json
import uuid

import fsspec
import pytest

from seqgen import config as cfgmod
from seqgen.config import ConfigError, ExperimentConfig, ModelConfig, from_dict, load, load_json, to_dict
from seqgen.storage import Storage, check_name, join, write_atomic


# ---------------------------------------------------------------------------------------------
# storage
@pytest.mark.parametrize("bad", ["", "a/b", "/abs", "..", ".", "../x", "x/..", ".hidden", "-x", "a b", "run\n",
                                 "a\\b", "x" * 129, None])
def test_bad_names_rejected(bad):
    with pytest.raises(ValueError, match="invalid run name"):
        check_name(bad, "run name")


@pytest.mark.parametrize("good", ["a", "ptb-char", "run_1.v2", "A" * 128, "a..b"])
def test_good_names_accepted(good):
    assert check_name(good) == good


def test_canonical_paths_reject_escapes():
    st = Storage.from_url("memory://root-x")
    assert st.dataset_dir("ptb") == "/root-x/datasets/ptb"
    assert st.run_dir("r1") == "/root-x/runs/r1"
    assert st.tune_dir() == "/root-x/tune" and st.tune_dir("s") == "/root-x/tune/s"
    for fn in (st.dataset_dir, st.run_dir, st.tune_dir):
        for bad in ("../x", "a/b", ".."):
            with pytest.raises(ValueError):
                fn(bad)
    assert join("/a/", "/b/", "", "c") == "/a/b/c"


def test_storage_urls(tmp_path):
    mem = Storage.from_url("memory://some/where/")
    assert mem.url == "memory://some/where" and not mem.shared_across_processes and not mem.is_local
    assert mem.url_of(mem.path("datasets", "d")) == "memory://some/where/datasets/d"
    local = Storage.from_url(str(tmp_path / "st"))
    assert local.is_local and local.shared_across_processes
    assert local.url_of(local.path("x")) == str(tmp_path / "st" / "x")
    rel = Storage.from_url("rel-dir")
    assert rel.url.startswith("/") and rel.url.endswith("/rel-dir")


@pytest.mark.parametrize("where", ["memory", "local"])
def test_write_json_atomic_leaves_no_temp_files(where, tmp_path):
    url = f"memory://atomic-{uuid.uuid4().hex}" if where == "memory" else str(tmp_path / "st")
    st = Storage.from_url(url)
    path = st.path("datasets", "d", "manifest.json")
    st.write_json_atomic(path, {"b": 1, "a": [1, 2]})
    st.write_json_atomic(path, {"b": 2})  # overwrite in place
    assert st.read_json(path) == {"b": 2}
    assert st.exists(path)
    listing = st.fs.ls(st.path("datasets", "d"), detail=False)
    assert [p.rsplit("/", 1)[-1] for p in listing] == ["manifest.json"]
    with st.fs.open(path, "rb") as f:
        assert json.loads(f.read()) == {"b": 2}
    if where == "local":
        assert not list(tmp_path.rglob(".tmp-*"))


@pytest.mark.parametrize("where", ["memory", "local"])
def test_a_failed_atomic_write_leaves_the_old_file_and_no_temp(where, tmp_path):
    url = f"memory://atomic-{uuid.uuid4().hex}" if where == "memory" else str(tmp_path / "st")
    st = Storage.from_url(url)
    path = st.path("runs", "r", "config.json")
    st.write_json_atomic(path, {"old": True})
    with pytest.raises(TypeError):
        write_atomic(st.fs, path, "not bytes")  # fails inside the write, after the temp file opened
    assert st.read_json(path) == {"old": True}
    assert [p.rsplit("/", 1)[-1] for p in st.fs.ls(st.path("runs", "r"), detail=False)] == ["config.json"]


def test_shared_across_processes_and_parquet_hash(tmp_path):
    import hashlib

    import pyarrow as pa

    from seqgen.storage import shared_across_processes, write_parquet

    assert not shared_across_processes("memory://x/y") and shared_across_processes("s3://b/p")
    assert shared_across_processes(str(tmp_path)) and shared_across_processes("file:///tmp/x")
    url = f"memory://pq-{uuid.uuid4().hex}/d/part-00000.parquet"
    sha = write_parquet(url, pa.table({"tokens": [[1, 2], [3]]}))
    with fsspec.open(url, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == sha


def test_object_stores_cache_no_listings():
    """Other processes write beside us (Ray workers, Tune trials): a cached listing would hide them."""
    import fsspec.config

    import seqgen.storage  # noqa: F401  (sets the defaults on import)

    for protocol in ("s3", "gcs", "gs"):
        assert fsspec.config.conf[protocol]["use_listings_cache"] is False


# ---------------------------------------------------------------------------------------------
# config
def test_defaults_and_overrides():
    cfg = load(overrides=["model.hidden_size=512", "train.shuffle=true", "optim.lr=0.01", "run_name=abc"])
    assert cfg.model.hidden_size == 512 and cfg.train.shuffle is True
    assert cfg.optim.lr == 0.01 and cfg.run_name == "abc"
    assert load() == ExperimentConfig()


@pytest.mark.parametrize("override,named", [
    ("model.hiden_size=3", "model.hiden_size"),
    ("modle.hidden_size=3", "modle.hidden_size"),
    ("train.nope=1", "train.nope"),
    ("bogus=1", "bogus"),
])
def test_unknown_key_named(override, named):
    with pytest.raises(ConfigError, match=f"unknown config key '{named}'"):
        load(overrides=[override])


@pytest.mark.parametrize("override,key", [
    ("model.hidden_size=abc", "model.hidden_size"),
    ("model.hidden_size=2.5", "model.hidden_size"),
    ("model.hidden_size=true", "model.hidden_size"),  # bool is not an int
    ("train.shuffle=3", "train.shuffle"),
    ("train.shuffle=yes please", "train.shuffle"),
    ("optim.lr=fast", "optim.lr"),
    ("optim.lr=true", "optim.lr"),
    ("model=3", "model"),
])
def test_wrong_type_rejected(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'|{key}:"):
        load(overrides=[override])


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="section.key=value"):
        load(overrides=["model.hidden_size"])
    with pytest.raises(ConfigError, match="'run_name.x'"):
        load(overrides=["run_name.x=1"])


def test_override_into_non_section_from_file(tmp_path):
    (tmp_path / "c.yaml").write_text("model: 5\n")
    with pytest.raises(ConfigError, match="'model' is not a section"):
        load(tmp_path / "c.yaml", ["model.hidden_size=3"])


def test_int_accepted_for_float_and_scientific_notation():
    cfg = load(overrides=["optim.lr=1", "model.dropout=0", "train.max_minutes=5"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert isinstance(cfg.model.dropout, float) and isinstance(cfg.train.max_minutes, float)
    # YAML 1.1 reads '1e-4' as a string; a float field takes it as the number it is
    assert load(overrides=["optim.lr=1e-4"]).optim.lr == 1e-4
    assert load(overrides=["optim.lr=2.5E+2"]).optim.lr == 250.0


def test_string_fields_keep_raw_strings():
    cfg = load(overrides=["train.init_from=1e3", "run_name=123", "dataset=true", "model.cell=null",
                          "train.init_from=memory://x/runs/a=b"])
    assert cfg.train.init_from == "memory://x/runs/a=b"  # split at the first '=' only
    assert cfg.run_name == "123" and cfg.dataset == "true" and cfg.model.cell == "null"
    assert load(overrides=["train.init_from=1e3"]).train.init_from == "1e3"


def test_yaml_file_loading(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        "# a comment\n"
        "run_name: my-run\n"
        "model: {cell: gru, hidden_size: 64, peephole: false, deriv_clip: 1}\n"
        "optim:\n  name: sgd\n  lr: 1e-4\n  momentum: 0.99\n"
        "train: {batch_size: 8, init_from: null}\n"
    )
    cfg = load(path, ["model.hidden_size=128"])  # overrides win over the file
    assert cfg.run_name == "my-run" and cfg.model.cell == "gru" and cfg.model.hidden_size == 128
    assert cfg.model.deriv_clip == 1.0 and isinstance(cfg.model.deriv_clip, float)
    assert cfg.optim.name == "sgd" and cfg.optim.lr == 1e-4 and cfg.optim.momentum == 0.99
    assert cfg.train.batch_size == 8 and cfg.train.init_from == ""
    assert cfg.train.seq_len == TrainDefaults.seq_len  # untouched keys keep defaults

    (tmp_path / "empty.yaml").write_text("")
    assert load(tmp_path / "empty.yaml") == ExperimentConfig()

    (tmp_path / "bad.yaml").write_text("model: {hidden_size: 64, colour: red}\n")
    with pytest.raises(ConfigError, match="unknown config key 'model.colour'"):
        load(tmp_path / "bad.yaml")
    (tmp_path / "bad2.yaml").write_text("train: {shuffle: 3}\n")
    with pytest.raises(ConfigError, match="'train.shuffle' must be bool"):
        load(tmp_path / "bad2.yaml")
    (tmp_path / "bad3.yaml").write_text("model: 5\n")
    with pytest.raises(ConfigError, match="model: expected a mapping"):
        load(tmp_path / "bad3.yaml")


TrainDefaults = cfgmod.TrainConfig()


def test_bundled_configs_load():
    from pathlib import Path

    configs = sorted((Path(cfgmod.__file__).parent / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        cfg = load(path)
        assert isinstance(cfg.model, ModelConfig)


def test_json_round_trip():
    cfg = load(overrides=["model.cell=scrn", "optim.lr=0.5", "train.use_gpu=true"])
    data = json.loads(json.dumps(to_dict(cfg)))
    assert load_json(data) == cfg
    with pytest.raises(ConfigError, match="unknown config key 'model.extra'"):
        from_dict(ExperimentConfig, {**data, "model": {**data["model"], "extra": 1}})
