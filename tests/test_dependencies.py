"""The house has no back-stairs: the low modules (models, evaluation, the kinds table, checkpoints,
storage, config, the sampling loop, dataset shards) import nothing from the rooms above them
(handwriting, train, serve, tune, the CLI). Each is imported in a fresh interpreter, so what
another test imported cannot hide a dependency."""

from __future__ import annotations

import subprocess
import sys

import pytest

LOW = ["seqgen.models", "seqgen.evaluate", "seqgen.kinds", "seqgen.checkpoint", "seqgen.storage",
       "seqgen.config", "seqgen.sampling", "seqgen.data.shards"]
HIGH = ("seqgen.handwriting", "seqgen.train", "seqgen.serve", "seqgen.tune", "seqgen.cli")


@pytest.mark.parametrize("module", LOW)
def test_low_module_imports_nothing_above_it(module):
    code = (f"import sys, {module}; "
            f"print(sorted(m for m in sys.modules if m.startswith({HIGH!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"{module} imports {out.strip()}"
