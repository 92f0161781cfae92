"""deploy/runtime_env.yaml ships seqgen to a stock Ray node: a node whose Python has only
ray[default], torch, numpy and pyarrow (and what they require) runs `jobs/preprocess.py` +
`jobs/train.py` submitted with `ray job submit --runtime-env deploy/runtime_env.yaml`, and the
run's artefacts land on storage.

The node's Python is a venv made in seconds by linking this environment's installed files
(installing them would download and unpack ~1.5 GB whenever CI starts from a fresh clone). It holds
none of the packages the yaml lists: Ray's pip plugin really installs those, into a copy of the
node's venv, as on any cluster. What they require in turn is on the node already (linked too), so
pip adds only the listed packages, and the job runs in the very set of packages a stock node ends
up with, a minute of unpacking sooner. pip is held to the versions this environment tests
(PIP_CONSTRAINT), so it can neither upgrade nor remove a linked package.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.integration.cluster import REPO, Cluster

pytestmark = [pytest.mark.ray, pytest.mark.cluster]

STOCK = ["ray[default]", "torch", "numpy", "pyarrow", "pip"]  # what every Ray image has (pip: to install more)
SHIPPED = yaml.safe_load((REPO / "deploy" / "runtime_env.yaml").read_text())["pip"]["packages"]


def requirement_closure(roots: list[str]) -> list[str]:
    """The installed distributions ``roots`` need, themselves included, extras and markers resolved."""
    extras_of: dict[str, set[str]] = {}
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        before = extras_of.get(name)
        if before is not None and set(req.extras) <= before:
            continue
        extras_of[name] = (before or set()) | set(req.extras)
        for r in map(Requirement, md.distribution(name).requires or []):
            if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in extras_of[name] | {""}):
                todo.append(r)
    return sorted(extras_of)


def link_venv(venv: Path, distributions: list[str]) -> Path:
    """A venv of this Python whose site-packages holds ``distributions`` (links to this
    environment's installed files, as listed in each one's RECORD) and nothing else; its bin/."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    for name in distributions:
        dist = md.distribution(name)
        root = Path(dist.locate_file(""))
        for f in dist.files or []:
            if f.parts[0] == ".." or not (root / f).exists():  # scripts in bin/; files pip never wrote
                continue
            top = root / f.parts[0]
            # A regular package or a .dist-info directory belongs to this one distribution: linked
            # whole. Namespace packages (google/, nvidia/) are shared: linked file by file.
            whole = top.is_dir() and ((top / "__init__.py").exists() or top.name.endswith(".dist-info"))
            src, dst = (top, site / f.parts[0]) if whole else (root / f, site / f)
            if not os.path.lexists(dst):
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.symlink_to(src)
    ray = venv / "bin" / "ray"  # the `ray` command, as pip writes it for ray's entry point
    ray.write_text(f"#!{venv}/bin/python\nimport sys\nfrom ray.scripts.scripts import main\nsys.exit(main())\n")
    ray.chmod(0o755)
    return venv / "bin"


@pytest.fixture(scope="module")
def stock_node(tmp_path_factory) -> tuple[Path, dict]:
    """bin/ of a stock node's Python: ray[default], torch, numpy, pyarrow (and what they require),
    none of the packages the yaml lists, nothing of seqgen's own; and the node's environment."""
    root = tmp_path_factory.mktemp("stock")
    stock = requirement_closure(STOCK)
    listed = {canonicalize_name(Requirement(r).name) for r in SHIPPED} - set(stock)
    pulled_in = set(requirement_closure(SHIPPED)) - listed  # by the listed packages, on any node
    bin_dir = link_venv(root / "venv", sorted(set(stock) | pulled_in))
    # pip installs the listed packages at the versions this environment tests, and can neither
    # upgrade nor remove a linked package (its files are this environment's own, linked).
    pins = root / "constraints.txt"
    pins.write_text("".join(f"{n}=={md.version(n)}\n" for n in sorted(set(stock) | pulled_in | listed)))
    # Stock indeed: the four import, and every package the runtime environment must bring is missing.
    probe = ("import importlib.metadata as md, ray, torch, numpy, pyarrow\n"
             f"for name in {sorted(listed)!r}:\n"
             "    try:\n        md.distribution(name)\n        print(name)\n    except md.PackageNotFoundError:\n        pass\n")
    out = subprocess.run([str(bin_dir / "python"), "-c", probe], cwd="/", capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout == "", f"the stock venv is broken or has {out.stdout}:\n{out.stderr[-2000:]}"
    assert {"typer", "fastapi", "matplotlib", "s3fs"} <= listed, listed
    return bin_dir, {"PIP_CONSTRAINT": str(pins)}


@pytest.fixture(scope="module")
def cluster(stock_node, tmp_path_factory):
    """A stock Ray node of 2 CPUs, alone, started as cluster/README.md tells: cluster/start-head.sh
    with its defaults (every socket on loopback, token authentication on). The job's driver (which
    trains, train.num_workers=0) and its preprocessing tasks run in the runtime environment the
    node sets up. (How jobs, tasks and workers spread over nodes: test_cluster.py; a worker
    node joining a head started by the scripts: tests/deploy/test_start_scripts.py.)"""
    bin_dir, env = stock_node
    with Cluster(tmp_path_factory.mktemp("runtime-env"), scripts=True) as c:
        c.start_head(2, node_ip="127.0.0.1", bin_dir=bin_dir, env=env)
        yield c


def test_the_scripts_default_head_listens_on_loopback_only_and_wants_the_token(cluster):
    assert cluster.alive_nodes()["head"].node_ip == "127.0.0.1"
    addresses = cluster.listening()  # every socket of every process of the node
    assert addresses and addresses <= {"127.0.0.1"}, addresses
    no_token = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")}
    out = subprocess.run(["ray", "list", "nodes", "--address", cluster.dashboard], env=no_token,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and ("401" in out.stderr or "auth" in out.stderr.lower()), out.stderr[-2000:]


def test_job_with_runtime_env_runs_on_a_stock_node(cluster, tmp_path):
    store = tmp_path / "store"
    entrypoint = (f"python jobs/preprocess.py shakespeare --storage {store} && "
                  f"python jobs/train.py --storage {store} run_name=env-run model.hidden_size=16 "
                  "train.max_steps=4 train.eval_every=2 train.eval_tokens=1000 train.batch_size=8 train.seq_len=20 "
                  "train.num_workers=0 train.progress=false")
    submit = ["ray", "job", "submit", "--address", cluster.dashboard, "--runtime-env", "deploy/runtime_env.yaml",
              "--", "bash", "-c", entrypoint]
    # A blocking submit with the cluster's token, as a user runs it: tails the job's logs, exits 1
    # if the job fails.
    out = subprocess.run(submit, cwd=REPO, env=cluster.env, capture_output=True, text=True, timeout=900)
    logs = out.stdout + out.stderr
    assert out.returncode == 0, f"the job failed:\n{logs[-4000:]}"
    assert "Successfully installed" in _setup_log(cluster), "pip installed nothing: the node was not stock"

    assert (store / "datasets" / "shakespeare" / "manifest.json").exists(), logs[-2000:]
    # the preprocessing ran as Ray tasks: in the node's worker processes, which import seqgen from
    # the runtime environment as the driver does (Ray Train's workers and controller are Ray
    # worker processes of the job like these; Ray Train itself runs on the test cluster)
    assert cluster.placed("_count_task", "_encode_task") == {"_count_task": {"head"}, "_encode_task": {"head"}}
    run = store / "runs" / "env-run"
    assert (run / "checkpoint_00000004" / "manifest.json").exists(), logs[-2000:]
    assert (run / "metrics.csv").exists() and (run / "curves.png").exists()


def _setup_log(cluster) -> str:
    """What Ray logged setting up runtime environments on the node (pip's output included)."""
    logs = Path(cluster.temp_dirs[0]) / "session_latest" / "logs"
    return "".join(p.read_text(errors="replace") for p in sorted(logs.glob("runtime_env_setup-*.log")))
