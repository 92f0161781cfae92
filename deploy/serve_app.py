"""The seqgen Serve application, configured from environment variables.

    SEQGEN_CHECKPOINT=<checkpoint dir URL | run dir URL | run name> serve run deploy.serve_app:app
    serve deploy deploy/serve.yaml          # on a cluster (uses seqgen.serve.app:app_builder)

SEQGEN_CHECKPOINT (required) is resolved like the CLI does: a checkpoint directory is used as is,
a run directory gives its best checkpoint, a bare run name is looked up under $SEQGEN_STORAGE.
Optional: SEQGEN_MAX_STREAMS (64), SEQGEN_MAX_QUEUED (64), SEQGEN_TIMEOUT_S (60),
SEQGEN_NUM_REPLICAS (1), SEQGEN_AUTOSCALE ("MIN:MAX"), SEQGEN_NUM_CPUS (0.5), SEQGEN_NUM_GPUS (0).
A Serve config file's ``deployments:`` section overrides the replica count and resources set here.
"""

import os

from seqgen.serve.app import BUILDER_ARGS, app_builder

ENV = {"max_streams": "SEQGEN_MAX_STREAMS", "max_queued": "SEQGEN_MAX_QUEUED", "timeout_s": "SEQGEN_TIMEOUT_S",
       "num_replicas": "SEQGEN_NUM_REPLICAS", "num_cpus": "SEQGEN_NUM_CPUS", "num_gpus": "SEQGEN_NUM_GPUS"}


def args_from_env() -> dict:
    args = {"num_cpus": 0.5}
    for name, var in ENV.items():
        raw = os.environ.get(var, "").strip()
        if raw:
            try:
                args[name] = BUILDER_ARGS[name](raw)
            except ValueError:
                raise ValueError(f"${var}={raw!r} is not a valid {BUILDER_ARGS[name].__name__}") from None
    if os.environ.get("SEQGEN_AUTOSCALE", "").strip():
        args["autoscale"] = os.environ["SEQGEN_AUTOSCALE"].strip()
    return args


app = app_builder(args_from_env())  # checkpoint and storage from $SEQGEN_CHECKPOINT / $SEQGEN_STORAGE
