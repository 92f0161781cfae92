"""The ``seqgen`` command. Each command calls the same library functions as ``jobs/*.py``.

Storage: ``--storage URL`` or ``$SEQGEN_STORAGE`` (default ``./seqgen-storage``). Ray: a local Ray
on 127.0.0.1 is started on demand, or ``--address`` / ``$RAY_ADDRESS`` joins a cluster.

The commands live by group, each module a thin layer over the library::

    data.py        preprocess, datasets
    training.py    train, tune, demo
    evaluating.py  evaluate
    generating.py  sample, score, write
    inspecting.py  runs, inspect, export
    serving.py     serve

and what they share in ``options.py`` (options, option checks) and ``tables.py``. Every user
error goes to the user the same way, one line and exit code 2 (``errors.py``).
"""

from __future__ import annotations

import json

import typer

from seqgen.cli import data, evaluating, generating, inspecting, serving, training
from seqgen.cli.errors import Commands
from seqgen.cli.options import config_path
from seqgen.numerics import apply_batch_invariance

HELP = __doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1]

app = typer.Typer(cls=Commands, add_completion=False, no_args_is_help=True, help=HELP, pretty_exceptions_enable=False)

# in the order `seqgen --help` lists them: the pipeline first, then what is on storage
for command in (data.preprocess, training.train, evaluating.evaluate, generating.sample, generating.score,
                training.tune, serving.serve, generating.write, inspecting.runs, data.datasets, inspecting.inspect,
                inspecting.export, training.demo):
    app.command()(command)


def versions() -> dict:
    """seqgen's version and those of the libraries a bug report needs (no import of torch or ray)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("seqgen", "torch", "ray"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out | {"python": platform.python_version()}


@app.callback(invoke_without_command=True)
def main(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the versions of seqgen, torch, ray and Python."),
    as_json: bool = typer.Option(False, "--json", help="With --version: as JSON."),
):
    apply_batch_invariance()  # before any computation (seqgen/numerics.py)
    if version:
        v = versions()
        typer.echo(json.dumps(v) if as_json else f"seqgen {v['seqgen']} (torch {v['torch']}, ray {v['ray']}, "
                                                   f"python {v['python']})")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
