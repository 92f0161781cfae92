"""The seqgen Serve application, configured from environment variables.

    SEQGEN_CHECKPOINT=<checkpoint dir URL | run dir URL | run name> serve run deploy.serve_app:app
    serve deploy deploy/serve.yaml          # on a cluster (uses seqgen.serve.app:app_builder)

SEQGEN_CHECKPOINT (required) is resolved like the CLI does: a checkpoint directory is used as is,
a run directory gives its best checkpoint, a bare run name is looked up under $SEQGEN_STORAGE.
Every setting of `seqgen.serve.config.ServeConfig` may be set as SEQGEN_<NAME>, e.g.
SEQGEN_MAX_STREAMS, SEQGEN_MAX_QUEUED, SEQGEN_TIMEOUT_S, SEQGEN_NUM_REPLICAS, SEQGEN_AUTOSCALE
("MIN:MAX"), SEQGEN_NUM_CPUS, SEQGEN_NUM_GPUS; unset ones keep ServeConfig's defaults (those of
`seqgen serve`). A Serve config file's ``deployments:`` section overrides the replica count and
resources set here.
"""

import os

from seqgen.serve.app import app_builder
from seqgen.serve.config import ServeConfig


def args_from_env(environ=os.environ) -> dict:
    """The ServeConfig settings set in ``environ`` as SEQGEN_<NAME> (strings: ServeConfig converts them)."""
    args = {}
    for name in ServeConfig.model_fields:
        raw = environ.get(f"SEQGEN_{name.upper()}", "").strip()
        if raw:
            args[name] = raw
    return args


app = app_builder(args_from_env())  # checkpoint and storage from $SEQGEN_CHECKPOINT / $SEQGEN_STORAGE
