"""Every shell command the README and the docs show is checked here, so that the docs cannot rot.

The commands are the ```bash blocks of README.md, docs/*.md and the READMEs of benchmarks/,
cluster/ and deploy/, one check per command (test id = file:line):

* ``seqgen ...`` and ``python jobs/<name>.py ...``: parsed by the real CLI (click's own parser,
  ``make_context``, which checks every option, argument and value type without running anything);
  ``-c`` and the ``section.key=value`` overrides of train / tune are loaded with seqgen.config and
  tune's ``--space`` is parsed. The cheap ones (runs, datasets, inspect, sample, score, evaluate,
  write) also *run* on a tiny storage; the blocks that train on the bundled Tiny Shakespeare run
  end to end with overrides that make the training tiny (marked ``ray``).
* ``ray ...`` / ``serve ...``: parsed by Ray's own CLIs; a ``ray job submit`` entrypoint is checked
  as above.
* ``python benchmarks/*.py`` / ``python docs/*.py``: the script exists and ``--help`` works.
* Every repository path a command names (manifests, Dockerfile, start scripts, jobs) exists;
  ``pip install '.[extra]'`` names an extra pyproject.toml defines.

Placeholders (``<run>``) must be listed in PLACEHOLDERS, and a program not listed in PROGRAMS fails
the test: a new kind of command needs a check here. The curl requests of docs/serving.md and the
export commands of docs/export.md are run by tests/serve/test_docs.py and tests/test_export.py.
Inline `seqgen ...` spans in the prose are checked too: the command and every option they name
exist, and every ``section.key=`` they set is a config key. So are the docs' links and pictures
(every relative link resolves, every picture of docs/img/ a doc names is embedded in it) and the
equation numbers the code cites (each is stated in docs/equations.md).
"""

from __future__ import annotations

import codecs
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import typer.main
from typer.testing import CliRunner

from seqgen import checkpoint as ckpt
from seqgen import cli
from seqgen import config as cfgmod
from seqgen.storage import join
from tiny_storage import new_storage, text_checkpoint, text_dataset

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [p for p in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
                         *(ROOT / d / "README.md" for d in ("benchmarks", "cluster", "deploy"))) if p.exists()]
try:  # recent typer vendors its own copy of click: seqgen's commands and errors are that copy's classes
    from typer import _click as typer_click
except ImportError:
    typer_click = click
SEQGEN = typer.main.get_command(cli.app)
CLICK_ERRORS = (click.ClickException, typer_click.ClickException)

#: <placeholder> text in the docs -> the value the checks use
PLACEHOLDERS = {"run": "shakespeare-quality", "best": "0.3", "0.1 | 0.3 | 1 | 3": "0.3"}
#: shell variables the docs use for a storage root
VARIABLES = {"S": "/tmp/seqgen-docs-storage", "STORE": "/tmp/seqgen-docs-storage"}
#: seqgen commands cheap enough to run for real on the tiny storage
CHEAP = {"runs", "datasets", "inspect", "sample", "score", "evaluate", "write"}
#: text runs the docs name, created (tiny, untrained) on that storage; iam-synthesis is the bundled model
TEXT_RUNS = ("shakespeare-demo", "shakespeare-quality", "shakespeare-lstm", "ptb-char-lstm")
#: appended to a documented `seqgen train` so that it trains for two tiny steps
TINY_TRAIN = ["train.max_steps=2", "train.eval_every=2", "train.eval_tokens=500", "train.max_minutes=0",
              "train.batch_size=4", "train.seq_len=20", "train.num_workers=0", "train.progress=false",
              "model.hidden_size=16", "model.num_layers=1"]
#: files whose commands other tests run (the endpoint's curl requests; export)
RUN_ELSEWHERE = {"docs/serving.md": "tests/serve/test_docs.py", "docs/export.md": "tests/test_export.py"}
REPO_PATH = re.compile(r"(?:/home/ray/seqgen/)?((?:jobs|docs|deploy|cluster|benchmarks|seqgen|tests)/[\w.@/-]+)")


# ---------------------------------------------------------------------------------------------
# Extraction


@dataclass
class Command:
    file: str  # relative to the repository
    line: int
    text: str  # the logical line as written (continuations joined)
    argv: list[str]  # one command of it (lines are split at &&, ||, ;, | and &)
    block: int  # index of its code block in the file

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}:{' '.join(self.argv)[:60]}"


def bash_blocks(path: Path) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of every ```bash / ```sh / ```shell block."""
    blocks, lang, start, lines, indent = [], None, 0, [], 0
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.lstrip().startswith("```"):
            if lang is not None:
                lines.append(line[indent:])  # fences inside list items are indented, and so is their text
        elif lang is None:
            lang, start, lines = line.strip()[3:].strip(), n + 1, []
            indent = len(line) - len(line.lstrip())
        else:
            if lang in ("bash", "sh", "shell"):
                blocks.append((start, lines))
            lang = None
    return blocks


def logical_lines(start: int, lines: list[str]) -> list[tuple[int, str]]:
    out, buf, first = [], "", start
    for n, line in enumerate(lines, start):
        if not buf:
            first = n
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        if buf.strip() and not buf.strip().startswith("#"):
            out.append((first, buf))
        buf = ""
    return out


def substitute(text: str) -> str:
    """Bash's $'...' quoting, [--flag] optional flags and <placeholders> -> plain shell words."""
    text = re.sub(r"\$'((?:[^'\\]|\\.)*)'", lambda m: shlex.quote(codecs.decode(m.group(1), "unicode_escape")), text)
    text = re.sub(r"\[(--[\w-]+)\]", r"\1", text)

    def placeholder(m: re.Match) -> str:
        if m.group(1) not in PLACEHOLDERS:
            raise AssertionError(f"placeholder <{m.group(1)}>: add it to PLACEHOLDERS in {__file__}")
        return PLACEHOLDERS[m.group(1)]

    return re.sub(r"<([^<>\n]+)>", placeholder, text)


def split_commands(text: str) -> list[list[str]]:
    lex = shlex.shlex(substitute(text), posix=True, punctuation_chars="|&;")
    lex.whitespace_split, lex.commenters = True, "#"
    commands, current = [], []
    for token in lex:
        if token in ("&&", "||", ";", "|", "&"):
            commands.append(current)
            current = []
        else:
            current.append(token)
    return [c for c in [*commands, current] if c]


def doc_commands() -> list[Command]:
    out = []
    for path in DOC_FILES:
        rel = str(path.relative_to(ROOT))
        for b, (start, lines) in enumerate(bash_blocks(path)):
            for line, text in logical_lines(start, lines):
                for argv in split_commands(text):
                    out.append(Command(rel, line, text, argv, b))
    return out


COMMANDS = doc_commands()


def expand(token: str) -> str:
    def var(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in VARIABLES:
            raise AssertionError(f"unknown variable ${name} in a seqgen command: add it to VARIABLES")
        return VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", var, token)


def strip_assignments(argv: list[str]) -> list[str]:
    i = 0
    while i < len(argv) and re.match(r"^[A-Za-z_]\w*=", argv[i]):
        i += 1
    return argv[i:]


# ---------------------------------------------------------------------------------------------
# Checks


def click_parse(command, name: str, args: list[str], parent=None):
    """Parse ``args`` through ``command`` and its subcommands as click would, running nothing;
    returns the innermost command's context (``info_name``, ``params``)."""
    ctx = command.make_context(name, list(args), parent=parent)
    if hasattr(command, "resolve_command"):  # a group
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if rest:
            sub_name, sub, sub_args = command.resolve_command(ctx, rest)
            return click_parse(sub, sub_name, sub_args, ctx)
    return ctx


def check_seqgen(args: list[str]) -> click.Context:
    ctx = click_parse(SEQGEN, "seqgen", [expand(a) for a in args])
    p = ctx.params
    if ctx.info_name in ("train", "tune"):
        cfgmod.load(cli.config_path(p["config"]), p["overrides"] or [])
    if ctx.info_name == "tune" and p["space"]:
        from seqgen.tune import parse_space

        parse_space(p["space"])
    return ctx


def job_command(script: str) -> str:
    """The seqgen command a jobs/*.py entrypoint runs (they all call ``app(["<command>", ...])``)."""
    m = re.search(r'app\(\["([\w-]+)"', (ROOT / script).read_text())
    assert m, f"{script} does not call seqgen.cli.app([\"<command>\", ...])"
    return m.group(1)


def check_python(argv: list[str], scripts: set[str]) -> None:
    if argv[1] == "-m":
        assert argv[2] in ("venv", "pytest"), f"python -m {argv[2]}: add a check for it"
        return
    m = REPO_PATH.fullmatch(argv[1])
    assert m, f"python {argv[1]}: not a script of this repository"
    script = m.group(1)
    if script.startswith("jobs/"):
        check_seqgen([job_command(script), *argv[2:]])
    else:
        assert script.startswith(("benchmarks/", "docs/")), f"python {script}: add a check for it"
        scripts.add(script)


def check_pip(argv: list[str]) -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for arg in argv[2:]:
        m = re.fullmatch(r"\.\[([\w,-]+)\]", arg)
        if m:
            for extra in m.group(1).split(","):
                assert extra in extras, f"pip install '.[{extra}]': pyproject.toml has no extra {extra!r}"


def check_ray(argv: list[str], scripts: set[str]) -> None:
    from ray.scripts.scripts import cli as ray_cli

    ctx = click_parse(ray_cli, "ray", argv[1:])
    if ctx.info_name == "submit":  # ray job submit [...] -- <entrypoint>
        check(strip_assignments(list(ctx.params["entrypoint"])), scripts)


def check_serve(argv: list[str], scripts: set[str]) -> None:
    from ray.serve.scripts import cli as serve_cli

    click_parse(serve_cli, "serve", argv[1:])


def check_paths(argv: list[str]) -> None:
    for token in argv:
        for part in token.split("=")[-1:] + [token]:
            m = REPO_PATH.fullmatch(part)
            if m:
                assert (ROOT / m.group(1)).exists(), f"{m.group(1)} does not exist"


def check_script(argv: list[str]) -> None:
    path = ROOT / argv[0]
    assert path.is_file() and os.access(path, os.X_OK), f"{argv[0]} is not an executable file"


#: program -> check; programs whose lines only need their repository paths to exist map to None
PROGRAMS = {
    "seqgen": lambda argv, scripts: check_seqgen(argv[1:]),
    "python": check_python, "python3": check_python,
    "pip": lambda argv, scripts: check_pip(argv),
    "ray": check_ray,
    "serve": check_serve,
    "cluster/start-head.sh": lambda argv, scripts: check_script(argv),
    "cluster/start-worker.sh": lambda argv, scripts: check_script(argv),
    **dict.fromkeys(("kubectl", "docker", "helm", "aws", "scp", "ssh", "curl", "export", "source"), None),
}


def check(argv: list[str], scripts: set[str]) -> None:
    argv = strip_assignments(argv)
    if not argv:
        return  # a variable assignment
    check_paths(argv)
    program = argv[0].removeprefix(".venv/bin/")
    assert program in PROGRAMS, f"{argv[0]}: no check for this program: add one to PROGRAMS in {__file__}"
    if PROGRAMS[program]:
        PROGRAMS[program]([program, *argv[1:]], scripts)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.id)
def test_documented_command_parses(command: Command):
    scripts: set[str] = set()
    try:
        check(command.argv, scripts)
    except CLICK_ERRORS as e:
        pytest.fail(f"{command.file}:{command.line}: {command.text.strip()}\n  -> {e.format_message()}")
    except Exception as e:  # noqa: BLE001 - the message names the doc line at fault
        pytest.fail(f"{command.file}:{command.line}: {command.text.strip()}\n  -> {type(e).__name__}: {e}")


def test_commands_were_found():
    """The extraction itself works: the known blocks are seen (a broken parser must not pass vacuously)."""
    files = {c.file for c in COMMANDS}
    assert {"README.md", "docs/quality.md", "docs/handwriting.md", "cluster/README.md", "deploy/README.md"} <= files
    programs = {strip_assignments(c.argv)[0].removeprefix(".venv/bin/") for c in COMMANDS if strip_assignments(c.argv)}
    assert {"seqgen", "python", "ray", "kubectl", "docker"} <= programs
    assert len(COMMANDS) > 60


def test_documented_scripts_show_help():
    """`python benchmarks/X.py` / `python docs/X.py` in the docs: each script exists and its
    --help works. One interpreter runs them all (runpy), so torch and Ray are imported once."""
    scripts = set()
    for c in COMMANDS:
        argv = strip_assignments(c.argv)
        if len(argv) > 1 and argv[0].removeprefix(".venv/bin/") in ("python", "python3"):
            m = REPO_PATH.fullmatch(argv[1])
            if m and m.group(1).startswith(("benchmarks/", "docs/")):
                scripts.add(m.group(1))
    assert scripts, "no documented scripts found"
    runner = r"""
import contextlib, io, json, runpy, sys
out = {}
for script in sys.argv[1:]:
    sys.argv, sys.path[:0] = [script, "--help"], [script.rsplit("/", 1)[0]]
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            runpy.run_path(script, run_name="__main__")
        out[script] = "returned without printing help (does it parse its arguments?)"
    except SystemExit as e:
        out[script] = "ok" if e.code in (0, None) and "usage:" in buf.getvalue() else f"exit {e.code}: {buf.getvalue()[-300:]}"
    except Exception as e:
        out[script] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", runner, *sorted(scripts)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results == dict.fromkeys(sorted(scripts), "ok")


# ---------------------------------------------------------------------------------------------
# Inline `seqgen ...` spans in the prose


def inline_spans() -> list[tuple[str, str]]:
    out = []
    for path in DOC_FILES:
        text = re.sub(r"^\s*```.*?^\s*```", "", path.read_text(), flags=re.S | re.M)
        for span in re.findall(r"`([^`]+)`", text):
            span = " ".join(span.split())
            if re.match(r"(\.venv/bin/)?seqgen ", span):
                out.append((str(path.relative_to(ROOT)), span))
    return out


@pytest.mark.parametrize("file,span", inline_spans(), ids=lambda v: str(v)[:60])
def test_inline_seqgen_spans_name_real_options(file: str, span: str):
    tokens = [t.strip("[](),;") for t in span.split()[1:]]
    ctx = typer_click.Context(SEQGEN, info_name="seqgen")
    command = SEQGEN
    if tokens and tokens[0].startswith("<"):
        return  # `seqgen <command>`: any command
    if tokens and not tokens[0].startswith("-"):
        command = SEQGEN.get_command(ctx, tokens[0])
        assert command is not None, f"{file}: `{span}`: seqgen has no command {tokens[0]!r}"
    names = {"--help"} | {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    for token in tokens:
        option = re.match(r"^(--?[A-Za-z][\w-]*)", token)
        if option:
            assert option.group(1) in names, f"{file}: `{span}`: {command.name or 'seqgen'} has no option {option.group(1)}"
        override = re.match(r"^(\w+\.\w+)=", token)
        if override and command.name in ("train", "tune"):
            cfgmod.leaf_type(override.group(1))  # raises ConfigError naming an unknown key


# ---------------------------------------------------------------------------------------------
# Running them


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """A storage with a tiny char dataset, untrained tiny text runs under the names the docs use and
    the bundled handwriting model as the runs ``iam-synthesis`` and ``hw-joined``, the bundled
    recognizer as ``iam-recognizer``, and a tiny ``iam`` handwriting dataset."""
    tmp = tmp_path_factory.mktemp("docs-store")
    st = new_storage("docs-commands")
    manifest = text_dataset(st, tmp)
    for run in TEXT_RUNS:
        text_checkpoint(st, manifest, run=run)
    for run, asset in (("iam-synthesis", "handwriting"), ("hw-joined", "handwriting"), ("iam-recognizer", "recognizer")):
        bundled = ckpt.load(str(ROOT / "seqgen" / "assets" / asset))
        url = st.url_of(join(st.run_dir(run), ckpt.checkpoint_name(bundled.progress["step"])))
        st.write_json_atomic(join(st.run_dir(run), "config.json"), cfgmod.to_dict(bundled.config))
        ckpt.save(url, bundled.config, bundled.meta, bundled.model_state, {}, bundled.progress)
    from seqgen.handwriting.dataset import preprocess_handwriting
    from tests.handwriting.test_recognizer import _write_iam

    _write_iam(tmp / "iam", {f"d{f:02d}-000": ["ol", "zo"] for f in range(4)}, seed=1)  # a tiny 'iam' dataset
    preprocess_handwriting(st, "iam", str(tmp / "iam"), valid_fraction=0.5, use_ray=False)
    return st


def with_storage(args: list[str], url: str) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--storage":
            skip = True
        elif not a.startswith("--storage="):
            out.append(a)
    return [*out, "--storage", url]


def invoke(args: list[str]):
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, f"seqgen {' '.join(args)}\n{result.output}\n{result.exception!r}"
    return result


def seqgen_args(command: Command) -> list[str] | None:
    argv = strip_assignments(command.argv)
    if argv and argv[0].removeprefix(".venv/bin/") == "seqgen":
        return [expand(a) for a in argv[1:]]
    return None


CHEAP_COMMANDS = [c for c in COMMANDS if c.file not in RUN_ELSEWHERE and seqgen_args(c) and seqgen_args(c)[0] in CHEAP]


@pytest.mark.parametrize("command", CHEAP_COMMANDS, ids=lambda c: c.id)
def test_cheap_documented_command_runs(command: Command, tiny_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # files the command writes (--out line.svg) land here
    args = with_storage(seqgen_args(command), tiny_store.url)
    args = [str(ROOT / a) if a.startswith("seqgen/assets/") else a for a in args]  # the docs run from the repo root
    if "--legibility" in args:  # two short texts instead of the bundled twenty: the same path, in seconds
        (tmp_path / "texts.txt").write_text("ol\nzo\n")
        args += ["--texts", str(tmp_path / "texts.txt")]
    invoke(args)
    params = check_seqgen(args).params
    for key in ("out", "phi", "density"):
        if params.get(key):
            assert (tmp_path / params[key]).stat().st_size > 0, f"{command.text}: wrote no {params[key]}"


def test_cheap_commands_were_found():
    assert {seqgen_args(c)[0] for c in CHEAP_COMMANDS} >= {"sample", "evaluate", "write"}


def shakespeare_blocks() -> list[list[Command]]:
    """Code blocks whose seqgen commands start from the bundled Tiny Shakespeare preset."""
    blocks: dict[tuple[str, int], list[Command]] = {}
    for c in COMMANDS:
        if seqgen_args(c) is not None:
            blocks.setdefault((c.file, c.block), []).append(c)
    return [cs for cs in blocks.values() if seqgen_args(cs[0])[:2] == ["preprocess", "shakespeare"]]


@pytest.mark.ray
@pytest.mark.parametrize("block", shakespeare_blocks(), ids=lambda b: f"{b[0].file}:{b[0].line}")
def test_shakespeare_block_runs_end_to_end(block: list[Command], ray_session, tmp_path, monkeypatch):
    """preprocess -> train (2 tiny steps) -> sample, exactly as the block has them, on a fresh storage."""
    monkeypatch.chdir(tmp_path)
    storage = str(tmp_path / "storage")
    for command in block:
        args = with_storage(seqgen_args(command), storage)
        if args[0] == "train":
            args = [*args, *TINY_TRAIN]
        invoke(args)
    runs = json.loads(invoke(["runs", "--json", "--storage", storage]).stdout)
    assert runs and all(r["checkpoints"] >= 1 for r in runs), runs


def test_shakespeare_blocks_were_found():
    assert len(shakespeare_blocks()) >= 2  # docs/quality.md and cluster/README.md


# ---------------------------------------------------------------------------------------------
# Links and pictures

LINK = re.compile(r"(!?)\[[^\]]*\]\(([^)\s]+)\)")
PICTURE = re.compile(r"[\w.-]+\.(?:png|svg|jpg|gif)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces -> hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^\s*```.*?^\s*```", "", path.read_text(), flags=re.S | re.M)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_pictures_resolve(path: Path):
    """Every relative link and image of a doc points at a file (and heading) that exists."""
    for _, target in LINK.findall(path.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s):, mailto:
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        assert dest.exists(), f"{path.relative_to(ROOT)}: {target}: no such file"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest), f"{path.relative_to(ROOT)}: {target}: no such heading"


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_pictures_named_are_shown(path: Path):
    """A picture of docs/img/ that a doc names is also embedded in it (![...](...)), not only named."""
    text = path.read_text()
    shown = {Path(target).name for bang, target in LINK.findall(text) if bang}
    named = {name for name in PICTURE.findall(LINK.sub("", text)) if (ROOT / "docs" / "img" / name).exists()}
    assert named <= shown, f"{path.relative_to(ROOT)} names but does not show {sorted(named - shown)}"


# ---------------------------------------------------------------------------------------------
# Equation numbers


def test_equation_numbers_cited_in_code_are_in_equations_md():
    """Every "eq. N" / "eqs. N-M" the code and docs cite is an equation docs/equations.md states."""
    text = (ROOT / "docs" / "equations.md").read_text()
    stated = {int(n) for n in re.findall(r"\\qquad \((\d+)\)", text)}
    stated |= {int(n) for n in re.findall(r"\$ \((\d+)\)", text)}  # the constants, (42)-(45)
    stated |= {n for a, b in re.findall(r"Eqs\. (\d+)-(\d+) (?:of the paper )?(?:derive|give)", text)
               for n in range(int(a), int(b) + 1)}
    assert set(range(1, 27)) <= stated and set(range(38, 63)) <= stated
    cited: dict[int, str] = {}
    sources = [*ROOT.glob("seqgen/**/*.py"), *ROOT.glob("tests/**/*.py"), *DOC_FILES]
    for path in sources:
        for m in re.finditer(r"\beqs?\. ((?:\d+(?:\s*[-,]\s*|,? and |\s*))+)", path.read_text(), flags=re.I):
            for a, b in re.findall(r"(\d+)(?:\s*-\s*(\d+))?", m.group(1)):
                for n in range(int(a), int(b or a) + 1):
                    cited.setdefault(n, str(path.relative_to(ROOT)))
    missing = {n: where for n, where in cited.items() if n not in stated}
    assert not missing, f"equations cited but not stated in docs/equations.md: {missing}"


@pytest.mark.parametrize("line", [
    "seqgen train -c shakespeare train.max_stepz=3",                          # no such config key
    "seqgen train -c shakespeare train.max_steps=many",                       # wrong type
    "seqgen train -c no-such-config",                                         # no such config
    "seqgen sample shakespeare-demo --temprature 0.8",                        # no such option
    "seqgen evaluate some-run --dynamic-lr fast",                             # not a number
    "seqgen tune search --space optim.lr=banana:1:2",                         # no such distribution
    "seqgen frobnicate",                                                      # no such command
    "python jobs/nope.py ptb-char",                                           # no such entrypoint
    "ray job submit --working-dir . -- python jobs/train.py --stroage /tmp",  # the job's option
    "ray job submit --runtime-env deploy/nope.yaml -- python jobs/train.py",  # no such file
    "ray job submit --no-such-flag -- python jobs/train.py",                  # Ray's own options
    "kubectl apply -f deploy/kuberay/nope.yaml",                              # no such manifest
    "pip install -e '.[nope]'",                                               # no such extra
    "frobnicate --all",                                                       # a program without a check
    "seqgen write hello --style <style>",                                     # an undeclared placeholder
])
def test_checks_reject_broken_commands(line: str):
    """The checks bite: each of these breaks one of them."""
    with pytest.raises((AssertionError, *CLICK_ERRORS, cfgmod.ConfigError, FileNotFoundError, ValueError)):
        for argv in split_commands(line):
            check(argv, set())
