"""Ray job entrypoint: `ray job submit --working-dir . -- python jobs/train.py ...`.

Same flags as `seqgen train --help`; inside a Ray job, RAY_ADDRESS points at the cluster.
"""

import sys

from seqgen.cli import app

if __name__ == "__main__":
    app(["train", *sys.argv[1:]])
