"""Property-based API tests: schemathesis (``--checks all``) against the text, the handwriting and
the several-models deployments' own OpenAPI documents. Every response must be documented, valid against its schema,
never a 5xx, and every schema-valid request accepted. Bounded: a fixed number of examples per
operation and a fixed seed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray


def schemathesis(url: str, examples: int) -> subprocess.CompletedProcess:
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    if exe is None:
        pytest.fail("schemathesis is not installed: pip install -e '.[dev]'")
    return subprocess.run(
        [exe, "run", f"{url}/openapi.json", "--checks", "all", "--max-examples", str(examples), "--seed", "1",
         "--request-timeout", "120", "--max-response-time", "120", "--wait-for-schema", "30", "--no-color"],
        capture_output=True, text=True, timeout=600,
    )


# The text deployment's own document (one model: its vocabulary's pattern stated) and the
# several-models one, which holds the bundled handwriting model too: its /write states that model's
# limits exactly as hw_url's document does, so a third run over hw_url would repeat the second.
@pytest.mark.parametrize("deployment", ["serve_url", "multi_url"])
def test_schemathesis_finds_no_failures(deployment, request):
    url = request.getfixturevalue(deployment)
    result = schemathesis(url, examples=25)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout or "passed" in result.stdout, result.stdout[-3000:]
