"""Ray job entrypoint: `ray job submit --working-dir . -- python jobs/tune.py ...`.

Same flags as `seqgen tune --help`; inside a Ray job, RAY_ADDRESS points at the cluster.
"""

import sys

from seqgen.cli import app

if __name__ == "__main__":
    app(["tune", *sys.argv[1:]])
