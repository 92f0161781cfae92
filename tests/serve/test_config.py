"""Serve settings (`seqgen.serve.config`): one set of defaults for the CLI, the builders and the
engine; Serve's options follow the engine's limits; the Serve config file, deploy/serve_app.py and
the CLI agree with them; bad settings are one-line errors naming them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import typer.main
import yaml

from seqgen.serve.app import app_builder
from seqgen.serve.config import HEADROOM, EngineConfig, ServeConfig, parse_autoscale

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = str(ROOT / "seqgen" / "assets" / "handwriting")


def test_serve_limits_follow_the_engine():
    o = ServeConfig(max_streams=32, max_queued=16, num_cpus=0.25).deployment_options()
    assert o["max_ongoing_requests"] == o["max_queued_requests"] == 32 + 16 + HEADROOM
    assert o["num_replicas"] == 1 and o["ray_actor_options"] == {"num_cpus": 0.25}
    gpu = ServeConfig(num_gpus=1).deployment_options()
    assert gpu["ray_actor_options"]["num_gpus"] == 1


def test_the_engine_gets_its_part_of_the_settings():
    config = ServeConfig(max_streams=8, flush_interval_s=0.01, num_cpus=0)
    assert config.engine == EngineConfig(max_streams=8, flush_interval_s=0.01)
    assert type(config.engine) is EngineConfig


def test_autoscale():
    o = ServeConfig(max_streams=64, autoscale=(1, 4)).deployment_options()
    assert "num_replicas" not in o
    assert o["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "initial_replicas": 1,
                                       "target_ongoing_requests": 32}
    o = ServeConfig(autoscale={"min_replicas": 0, "max_replicas": 2, "upscale_delay_s": 1}).deployment_options()
    assert o["autoscaling_config"]["upscale_delay_s"] == 1 and o["autoscaling_config"]["initial_replicas"] == 1
    assert ServeConfig.of(autoscale="2:8").autoscale == (2, 8) and ServeConfig.of(autoscale="").autoscale is None
    assert parse_autoscale("2:8") == (2, 8) and parse_autoscale(None) is None
    for bad in ("3", "a:b", "1:2:3"):
        with pytest.raises(ValueError, match="MIN:MAX"):
            parse_autoscale(bad)
        with pytest.raises(ValueError, match="MIN:MAX"):
            ServeConfig.of(autoscale=bad)
    with pytest.raises(ValueError, match="0 <= MIN <= MAX"):
        ServeConfig.of(autoscale=(3, 2))


def test_settings_from_strings_and_bad_settings():
    """Config files and environment variables give strings; a bad one is named, on one line."""
    config = ServeConfig.of(max_streams="8", timeout_s="30", num_cpus="0.5")
    assert (config.max_streams, config.timeout_s, config.num_cpus) == (8, 30.0, 0.5)
    for settings, message in [({"max_streams": 0}, "max_streams: Input should be greater than or equal to 1"),
                              ({"num_cpus": "lots"}, "num_cpus: Input should be a valid number"),
                              ({"timeout_s": 601}, "timeout_s: Input should be less than or equal to 600"),
                              ({"max_length": 5001}, "max_length: Input should be less than or equal to 5000"),
                              ({"max_length": 0}, "max_length: Input should be greater than or equal to 1"),
                              ({"max_batch_size": 3}, r"unknown serve setting\(s\) \['max_batch_size'\]")]:
        with pytest.raises(ValueError, match=message) as e:
            ServeConfig.of(**settings)
        assert "\n" not in str(e.value)


def test_builder_refuses_unknown_arguments():
    with pytest.raises(ValueError, match="unknown serve setting.*max_batch_size"):
        app_builder({"checkpoint": BUNDLED, "max_batch_size": 3})
    with pytest.raises(ValueError, match="no checkpoint"):
        app_builder({})


def test_builder_takes_one_checkpoint_or_a_list():
    """``checkpoint`` (existing configs) or ``checkpoints`` (a list, or a comma-separated string from
    an environment variable): the deployment gets every checkpoint's URL, in order."""
    from seqgen.serve.app import checkpoint_list

    def urls(app):  # what the deployment's constructor receives
        return app._bound_deployment.init_args[0]

    shakespeare = str(ROOT / "seqgen" / "assets" / "shakespeare")
    assert urls(app_builder({"checkpoint": BUNDLED, "num_cpus": "0"})) == [BUNDLED]
    assert urls(app_builder({"checkpoints": ["bundled:shakespeare", BUNDLED]})) == [shakespeare, BUNDLED]
    assert urls(app_builder({"checkpoints": f"{BUNDLED}, bundled:shakespeare"})) == [BUNDLED, shakespeare]
    assert checkpoint_list(None) == checkpoint_list("") == [] and checkpoint_list(" a ,b,") == ["a", "b"]
    with pytest.raises(ValueError, match="not both"):
        app_builder({"checkpoint": BUNDLED, "checkpoints": [BUNDLED]})


def test_the_cli_shows_the_config_defaults():
    """`seqgen serve`'s options default to ServeConfig's (one set of defaults)."""
    from seqgen import cli

    params = {p.name: p.default for p in typer.main.get_command(cli.app).commands["serve"].params}
    defaults = ServeConfig()
    assert (params["max_streams"], params["max_queued"], params["timeout"], params["cpus"], params["gpus"],
            params["replicas"]) == (defaults.max_streams, defaults.max_queued, defaults.timeout_s, defaults.num_cpus,
                                    defaults.num_gpus, defaults.num_replicas)


def test_deploy_serve_app_reads_every_setting_from_the_environment(monkeypatch):
    """deploy/serve_app.py: SEQGEN_<SETTING> for every ServeConfig setting; unset ones keep the defaults."""
    monkeypatch.setenv("SEQGEN_CHECKPOINT", BUNDLED)
    monkeypatch.setenv("SEQGEN_MAX_STREAMS", "8")
    monkeypatch.setenv("SEQGEN_AUTOSCALE", "1:3")
    spec = importlib.util.spec_from_file_location("serve_app", ROOT / "deploy" / "serve_app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # builds the app: the settings are valid and the checkpoint found
    assert module.args_from_env() == {"max_streams": "8", "autoscale": "1:3"}
    assert module.args_from_env({"SEQGEN_HEALTH_CHECK_PERIOD_S": " 2 "}) == {"health_check_period_s": "2"}
    assert ServeConfig.of(**module.args_from_env()).num_cpus == ServeConfig().num_cpus


def test_serve_yaml_is_a_valid_serve_config_consistent_with_the_engine():
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load((ROOT / "deploy" / "serve.yaml").read_text())
    ServeDeploySchema.model_validate(config)
    (application,) = config["applications"]
    assert application["import_path"] == "seqgen.serve.app:app_builder"
    (deployment,) = application["deployments"]
    args = application["args"]
    settings = ServeConfig.of(**{k: v for k, v in args.items() if k not in ("checkpoints", "storage")})
    expected = settings.deployment_options()
    assert deployment["max_ongoing_requests"] == expected["max_ongoing_requests"]
    assert deployment["max_queued_requests"] == expected["max_queued_requests"]
    auto = deployment["autoscaling_config"]
    assert 1 <= auto["min_replicas"] <= auto["max_replicas"]
    assert auto["target_ongoing_requests"] <= args["max_streams"]
    with pytest.raises(Exception):
        ServeDeploySchema.model_validate({**config, "applications": [{**application, "route_prefix": 5}]})
