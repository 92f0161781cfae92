"""Importing seqgen changes nothing in the process's environment: the local Ray's settings
(``seqgen.runtime.LOCAL_ENV``) are applied when seqgen starts a local Ray, not when a module is
imported. Checked in a fresh interpreter, so what another test set cannot hide it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from seqgen.runtime import LOCAL_ENV

# every module a user or the CLI may import first, the ones that import Ray included
MODULES = ["seqgen", "seqgen.storage", "seqgen.runtime", "seqgen.cli", "seqgen.train.run", "seqgen.train.loop",
           "seqgen.tune.search", "seqgen.serve.app"]

CHILD = """
import json, os, sys
import ray, ray.train, ray.tune, ray.serve  # Ray's own import sets a variable or two: not ours to check
before = dict(os.environ)
for name in sys.argv[1:]:
    __import__(name)
print(json.dumps({k: [before.get(k), os.environ.get(k)] for k in set(before) | set(os.environ)
                  if before.get(k) != os.environ.get(k)}))
"""


@pytest.mark.slow  # a fresh interpreter importing Ray, torch and all of seqgen: ~10-20 s
def test_importing_seqgen_leaves_the_environment_alone():
    # as a user's shell would have it: none of the settings (this process may have started a Ray)
    env = {k: v for k, v in os.environ.items() if k not in LOCAL_ENV and k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", CHILD, *MODULES], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {}
