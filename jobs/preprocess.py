"""Ray job entrypoint: `ray job submit --working-dir . -- python jobs/preprocess.py ...`.

Same flags as `seqgen preprocess --help`; inside a Ray job, RAY_ADDRESS points at the cluster.
Inputs and storage are paths or fsspec URLs, and a preset's settings travel as options, so a
preset's dataset (same fingerprint) can be built from a copy of its files anywhere, e.g.

    python jobs/preprocess.py ptb-char --data-dir s3://bucket/data --storage s3://bucket/seqgen
    python jobs/preprocess.py chars -i s3://b/ptb.char.train.txt --valid s3://b/ptb.char.valid.txt \\
        --test s3://b/ptb.char.test.txt --preset ptb-char --storage s3://bucket/seqgen
    python jobs/preprocess.py iam --handwriting -i s3://bucket/iam-ondb --storage s3://bucket/seqgen
"""

import sys

from seqgen.cli import app

if __name__ == "__main__":
    app(["preprocess", *sys.argv[1:]])
