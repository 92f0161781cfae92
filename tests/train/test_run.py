"""Launch settings: failures allowed, GPU auto-detection, bf16 only on GPU."""

from __future__ import annotations

import pytest

from seqgen import config
from seqgen.config import ConfigError
from seqgen.storage import Storage
from seqgen.train.run import make_trainer, resolve_gpu, run_config


def test_max_failures_reaches_ray_trains_failure_config(tmp_path):
    st = Storage.from_url(str(tmp_path))
    assert run_config(config.load(), st).failure_config.max_failures == 3  # the default
    assert run_config(config.load(None, ["train.max_failures=-1"]), st).failure_config.max_failures == -1
    with pytest.raises(ConfigError, match="train.max_failures"):
        config.load(None, ["train.max_failures=-2"])


def test_use_gpu_auto_follows_the_cluster(ray_session):
    assert ray_session.cluster_resources().get("GPU", 0) == 0  # the test Ray has none
    assert resolve_gpu(config.load()) is False  # auto is the default
    assert resolve_gpu(config.load(None, ["train.use_gpu=true"])) is True
    with pytest.raises(ConfigError, match="train.use_gpu.*auto, true, false"):
        config.load(None, ["train.use_gpu=yes please"])


def test_bf16_is_refused_without_a_gpu(ray_session, tmp_path):
    cfg = config.load(None, ["train.precision=bf16"])
    with pytest.raises(ConfigError, match=r"train.precision=bf16 needs a GPU .*train.use_gpu=auto"):
        make_trainer(cfg, Storage.from_url(str(tmp_path)))
