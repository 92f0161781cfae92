"""Ray job entrypoint: `ray job submit --working-dir . -- python jobs/serve.py ...`.

Same flags as `seqgen serve --help`; inside a Ray job, RAY_ADDRESS points at the cluster.
"""

import sys

from seqgen.cli import app

if __name__ == "__main__":
    app(["serve", *sys.argv[1:]])
