"""The seqgen Serve application, configured from environment variables.

    SEQGEN_CHECKPOINT=<checkpoint dir URL | run dir URL | run name> serve run deploy.serve_app:app
    serve deploy deploy/serve.yaml          # on a cluster; see deploy/README.md

SEQGEN_CHECKPOINT (required) is resolved like the CLI does: a checkpoint directory is used as is,
a run directory gives its best checkpoint, a bare run name is looked up under $SEQGEN_STORAGE.
Optional: SEQGEN_MAX_BATCH_SIZE (32), SEQGEN_BATCH_WAIT_S (0.01), SEQGEN_NUM_REPLICAS (1),
SEQGEN_NUM_CPUS (0.5), SEQGEN_NUM_GPUS (0). A Serve config file's ``deployments:`` section
overrides the replica count and resources set here.
"""

import os

from seqgen.serve.app import build_app
from seqgen.storage import Storage
from seqgen.checkpoint import resolve


def _env(name: str, cast, default):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return cast(raw)
    except ValueError:
        raise ValueError(f"${name}={raw!r} is not a valid {cast.__name__}") from None


def checkpoint_from_env() -> str:
    ref = os.environ.get("SEQGEN_CHECKPOINT", "").strip()
    if not ref:
        raise RuntimeError(
            "set SEQGEN_CHECKPOINT to the checkpoint to serve (a checkpoint directory URL, a run "
            "directory URL, or a run name under $SEQGEN_STORAGE), e.g. in the Serve config's "
            "runtime_env.env_vars"
        )
    return resolve(Storage.from_url(), ref)


app = build_app(
    checkpoint_from_env(),
    max_batch_size=_env("SEQGEN_MAX_BATCH_SIZE", int, 32),
    batch_wait_timeout_s=_env("SEQGEN_BATCH_WAIT_S", float, 0.01),
    num_replicas=_env("SEQGEN_NUM_REPLICAS", int, 1),
    num_cpus=_env("SEQGEN_NUM_CPUS", float, 0.5),
    num_gpus=_env("SEQGEN_NUM_GPUS", float, 0.0),
)
