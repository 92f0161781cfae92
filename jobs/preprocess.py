"""Ray job entrypoint: `ray job submit --working-dir . -- python jobs/preprocess.py ...`.

Same flags as `seqgen preprocess --help`; inside a Ray job, RAY_ADDRESS points at the cluster.
"""

import sys

from seqgen.cli import app

if __name__ == "__main__":
    app(["preprocess", *sys.argv[1:]])
