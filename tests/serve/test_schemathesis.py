"""Property-based API tests: schemathesis (``--checks all``) against the several-models deployment's
own OpenAPI document (the tiny text model, the bundled handwriting and Shakespeare models). Every
response must be documented, valid against its schema, never a 5xx, and every schema-valid request
accepted. Bounded: a fixed number of examples per operation and a fixed seed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

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


# One run, over the several-models document: it holds every operation of the text deployment's
# document with the same schemas, and a /write with exactly the bundled handwriting model's (hw_url)
# schemas (the two tests below), so a run over serve_url (~55 s) or hw_url (~70 s) would repeat
# part of this one.
def test_schemathesis_finds_no_failures(multi_url):
    result = schemathesis(multi_url, examples=25)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout or "passed" in result.stdout, result.stdout[-3000:]


def _served_parts_left_out(document: dict) -> dict:
    """``document`` with what each deployment states of its own left out: the `model` fields' lists
    of served names, the `maximum` of `length` and `max_tokens` (its max_length: tests/serve/
    test_models.py), the lines of its storage's dataset that are styles (the `style` branch that
    lists them), and its server (the route prefix)."""
    def walk(node, names=False, limit=False):
        if isinstance(node, dict):
            return {k: walk(_without_dataset_lines(v) if k == "style" else v, names or k == "model",
                            limit or k in ("length", "max_tokens")) for k, v in node.items()
                    if not (names and k == "enum") and not (limit and k == "maximum")}
        if isinstance(node, list):
            return [walk(v, names, limit) for v in node]
        return node

    return {k: walk(v) for k, v in (document or {}).items() if k != "servers"}


def _without_dataset_lines(style):
    """A `style` property without its branch of dataset line ids (`{"type": "string", "enum": [...]}`)."""
    if not isinstance(style, dict) or "anyOf" not in style:
        return style
    return {**style, "anyOf": [b for b in style["anyOf"] if not (b.get("type") == "string" and "enum" in b)]}


def _referenced(node, schemas: dict, found: set | None = None) -> set[str]:
    """The component schemas ``node`` refers to, directly or through other schemas."""
    found = set() if found is None else found
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        name = ref.removeprefix("#/components/schemas/")
        if ref and name not in found:
            found.add(name)
            _referenced(schemas[name], schemas, found)
        for value in node.values():
            _referenced(value, schemas, found)
    elif isinstance(node, list):
        for value in node:
            _referenced(value, schemas, found)
    return found


def test_the_text_documents_operations_are_the_several_models_ones(serve_url, multi_url):
    """What lets the schemathesis run over multi_url stand for one over serve_url: every operation
    and schema of the text deployment's document is in the several-models one, the same but for
    the served names of `model` (one more there) and the maximum of `length` and `max_tokens`
    (1,000 there: its max_length), which the handwriting model's /write adds to."""
    text = requests.get(f"{serve_url}/openapi.json", timeout=60).json()
    multi = requests.get(f"{multi_url}/openapi.json", timeout=60).json()
    for path, operations in text["paths"].items():
        assert _served_parts_left_out(multi["paths"].get(path)) == _served_parts_left_out(operations), path
    schemas, several = text["components"]["schemas"], multi["components"]["schemas"]
    names = {}
    for name in _referenced(text["paths"], schemas):
        assert _served_parts_left_out(several.get(name)) == _served_parts_left_out(schemas[name]), name
        for served, doc in ((schemas[name], "text"), (several[name], "multi")):
            for m in served.get("properties", {}).get("model", {}).get("anyOf", []):
                names.setdefault(doc, set()).add(tuple(m.get("enum", ())))
    assert names == {"text": {("serve-tiny",), ()}, "multi": {("serve-tiny", "shakespeare-bundled"), ()}}, names
    assert set(multi["paths"]) == set(text["paths"]) | {"/write"}


def test_the_bundled_handwriting_models_write_is_the_several_models_one(hw_url, multi_url):
    """What lets the run over multi_url (a tiny handwriting network) stand for one over hw_url (the
    bundled model): /write and every schema it refers to are the same but for the served names and
    the lines of /hw's dataset usable as styles."""
    hw = requests.get(f"{hw_url}/openapi.json", timeout=60).json()
    multi = requests.get(f"{multi_url}/openapi.json", timeout=60).json()
    assert _served_parts_left_out(multi["paths"]["/write"]) == _served_parts_left_out(hw["paths"]["/write"])
    schemas, several = hw["components"]["schemas"], multi["components"]["schemas"]
    referenced = _referenced(hw["paths"]["/write"], schemas)
    assert "WriteBody" in referenced
    for name in referenced:
        assert _served_parts_left_out(several.get(name)) == _served_parts_left_out(schemas[name]), name
