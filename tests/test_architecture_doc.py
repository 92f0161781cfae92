"""docs/architecture.md stays true: every path it names exists and every code reference resolves.

* Paths: anything that starts with ``seqgen/``, ``jobs/``, ``benchmarks/``, ``deploy/``, ``docs/``
  or ``tests/`` (in the picture, the table and the prose alike; a link's ``../`` is dropped) must
  exist: a glob (``jobs/*.py``) must match something, a directory written with a trailing slash
  must be a directory, and under ``seqgen/`` a package (it has ``__init__.py``).
* Code references, the syntax the page states at its top: a backtick span ``path.py: name`` (names
  separated by commas, ``Class.method`` allowed). The path must be a module of ``seqgen/``; the
  module is imported and every name looked up with ``getattr``.

So renaming or moving a module, or renaming a function or class the page points at, fails here
until the page follows.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"

PATH = re.compile(r"(?<![\w/.<>-])((?:seqgen|jobs|benchmarks|deploy|docs|tests)/[\w./*-]*)")
CODE_REF = re.compile(r"`([^`\s:]+\.py):\s*([^`]+)`")
NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def named_paths(text: str) -> list[str]:
    text = text.replace("](../", "](")  # links from docs/ to the repository root
    return sorted({m.rstrip(".") for m in PATH.findall(text)})


def path_problems(text: str, root: Path = ROOT) -> list[str]:
    problems = []
    for path in named_paths(text):
        if "*" in path:
            if not list(root.glob(path)):
                problems.append(f"{path}: matches nothing")
        elif path.endswith("/"):
            if not (root / path).is_dir():
                problems.append(f"{path}: no such directory")
            elif path.startswith("seqgen/") and not (root / path / "__init__.py").is_file():
                problems.append(f"{path}: not a package (no __init__.py)")
        elif not (root / path).exists():
            problems.append(f"{path}: no such file")
    return problems


def code_refs(text: str) -> list[tuple[str, list[str]]]:
    return [(path, [n.strip() for n in names.split(",")]) for path, names in CODE_REF.findall(text)]


def module_name(path: str) -> str:
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def ref_problems(text: str, root: Path = ROOT) -> list[str]:
    problems = []
    for path, names in code_refs(text):
        where = f"`{path}: {', '.join(names)}`"
        if not path.startswith("seqgen/"):
            problems.append(f"{where}: code references name modules of seqgen/ only")
            continue
        if not (root / path).is_file():
            problems.append(f"{where}: no such file")
            continue
        try:
            module = importlib.import_module(module_name(path))
        except Exception as e:  # noqa: BLE001 - any failure to import is the page's problem to report
            problems.append(f"{where}: cannot import {module_name(path)}: {type(e).__name__}: {e}")
            continue
        for name in names:
            if not NAME.fullmatch(name):
                problems.append(f"{where}: {name!r} is not a name")
                continue
            obj = module
            for part in name.split("."):
                if not hasattr(obj, part):
                    problems.append(f"{where}: {module.__name__} has no {name}")
                    break
                obj = getattr(obj, part)
    return problems


def test_every_path_named_exists():
    assert path_problems(DOC.read_text()) == []


def test_every_code_reference_resolves():
    assert ref_problems(DOC.read_text()) == []


def test_the_page_names_enough_to_be_checked():
    """The checks found what they look for (a broken pattern would pass an empty page)."""
    text = DOC.read_text()
    assert len(named_paths(text)) >= 40
    assert sum(len(names) for _, names in code_refs(text)) >= 60
    assert "`path: name`" in text.split("\n## ")[0], "the syntax of code references is stated at the top"
    picture = re.search(r"^```text\n(.*?)^```", text, flags=re.S | re.M)
    assert picture, "the picture is a ```text block"
    flow = [picture.group(1).find(p) for p in ("seqgen/data/", "seqgen/data/publish.py", "seqgen/train/run.py",
                                               "seqgen/checkpoint.py", "seqgen/sampling.py", "seqgen/serve/")]
    assert -1 not in flow and flow == sorted(flow), "the picture names the stages in data-flow order"


@pytest.mark.parametrize("text", [
    "`seqgen/nope.py: x`",                 # a module that does not exist (renamed)
    "`seqgen/kinds.py: NO_SUCH_NAME`",     # a name that does not exist
    "`seqgen/kinds.py: KINDS, nope`",      # one bad name among good ones
    "`seqgen/serve/engine.py: Engine.nope`",  # a method that does not exist
    "`seqgen/kinds.py: KINDS[0]`",         # not a name
    "`benchmarks/common.py: x`",           # a code reference outside seqgen/
    "open seqgen/nope/ first",             # a package that does not exist
    "seqgen/configs/ holds the YAML",      # a directory that is not a package
    "see jobs/nope.py.",                   # a job that does not exist
    "all of deploy/nope/*.yaml",           # a glob that matches nothing
    "[the deploy notes](../deploy/NOPE.md)",  # a link to the repository root
])
def test_checks_reject_a_broken_page(text: str):
    assert path_problems(text) + ref_problems(text)


def test_a_renamed_module_fails_the_page():
    """What the checks see after `git mv seqgen/serve/engine.py seqgen/serve/batching.py` (the page
    still naming the old path) and after renaming a function it points at."""
    text = DOC.read_text()
    assert "seqgen/serve/engine.py" in text and "`seqgen/data/publish.py: publish," in text
    moved = text.replace("seqgen/serve/engine.py", "seqgen/serve/engine_renamed.py")
    assert any("engine_renamed.py: no such file" in p for p in path_problems(moved))
    assert any("engine_renamed.py" in p for p in ref_problems(moved))
    renamed = text.replace("`seqgen/data/publish.py: publish,", "`seqgen/data/publish.py: publish_dataset,")
    assert any("has no publish_dataset" in p for p in ref_problems(renamed))
