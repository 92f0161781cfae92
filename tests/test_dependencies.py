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


@pytest.fixture(scope="module")
def imported_above() -> dict[str, str]:
    """module -> the high modules its import loaded (printed by its own fresh interpreter); the
    interpreters run side by side, so the file costs about its slowest import, not their sum."""
    code = "import sys, {}; print(sorted(m for m in sys.modules if m.startswith(%r)))" % (HIGH,)
    procs = {m: subprocess.Popen([sys.executable, "-c", code.format(m)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for m in LOW}
    results = {}
    for module, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"importing {module} failed:\n{err[-2000:]}"
        results[module] = out.strip()
    return results


@pytest.mark.parametrize("module", LOW)
def test_low_module_imports_nothing_above_it(module, imported_above):
    assert imported_above[module] == "[]", f"{module} imports {imported_above[module]}"
