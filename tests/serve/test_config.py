"""Serve options follow the engine's limits; the Serve config file and the builders agree with them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from seqgen.serve.app import HEADROOM, app_builder, deployment_options, parse_autoscale

ROOT = Path(__file__).resolve().parents[2]


def test_serve_limits_follow_the_engine():
    o = deployment_options(max_streams=32, max_queued=16, num_cpus=0.25)
    assert o["max_ongoing_requests"] == o["max_queued_requests"] == 32 + 16 + HEADROOM
    assert o["num_replicas"] == 1 and o["ray_actor_options"] == {"num_cpus": 0.25}
    gpu = deployment_options(num_gpus=1)
    assert gpu["ray_actor_options"]["num_gpus"] == 1


def test_autoscale():
    o = deployment_options(max_streams=64, autoscale=(1, 4))
    assert "num_replicas" not in o
    assert o["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "initial_replicas": 1,
                                       "target_ongoing_requests": 32}
    o = deployment_options(autoscale={"min_replicas": 0, "max_replicas": 2, "upscale_delay_s": 1})
    assert o["autoscaling_config"]["upscale_delay_s"] == 1 and o["autoscaling_config"]["initial_replicas"] == 1
    assert parse_autoscale("2:8") == (2, 8) and parse_autoscale(None) is None
    for bad in ("3", "a:b", "1:2:3"):
        with pytest.raises(ValueError, match="MIN:MAX"):
            parse_autoscale(bad)
    with pytest.raises(ValueError, match="0 <= MIN <= MAX"):
        deployment_options(autoscale=(3, 2))


def test_builder_refuses_unknown_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown serve argument.*max_batch_size"):
        app_builder({"checkpoint": str(ROOT / "seqgen" / "assets" / "handwriting"), "max_batch_size": 3})
    with pytest.raises(ValueError, match="no checkpoint"):
        app_builder({})


def test_serve_yaml_is_a_valid_serve_config_consistent_with_the_engine():
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load((ROOT / "deploy" / "serve.yaml").read_text())
    ServeDeploySchema.model_validate(config)
    (application,) = config["applications"]
    assert application["import_path"] == "seqgen.serve.app:app_builder"
    (deployment,) = application["deployments"]
    args = application["args"]
    expected = deployment_options(max_streams=args["max_streams"], max_queued=args["max_queued"])
    assert deployment["max_ongoing_requests"] == expected["max_ongoing_requests"]
    assert deployment["max_queued_requests"] == expected["max_queued_requests"]
    auto = deployment["autoscaling_config"]
    assert 1 <= auto["min_replicas"] <= auto["max_replicas"]
    assert auto["target_ongoing_requests"] <= args["max_streams"]
    with pytest.raises(Exception):
        ServeDeploySchema.model_validate({**config, "applications": [{**application, "route_prefix": 5}]})
