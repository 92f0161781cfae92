"""The one way an error reaches a user of the ``seqgen`` command.

An error the user can fix is one line on stderr and exit code 2: a missing or damaged checkpoint or
dataset, options that cannot go together, a run or dataset another writer holds (its lease), a
failed training run, and click's own usage errors (a missing argument, an unknown option or
command). `Commands.invoke` is the one place that turns exceptions into those lines; anything else
is a bug and keeps its traceback. ``SEQGEN_DEBUG=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import os
from typing import NoReturn

import typer
from typer.core import TyperGroup

from seqgen.lease import LeaseHeld, LeaseLost

try:  # recent typer vendors its own copy of click: its commands raise that copy's exceptions
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # typer before the vendored copy
    from click.exceptions import ClickException, NoArgsIsHelpError

#: exceptions whose message is the whole story for the user (ConfigError, DatasetError and
#: CheckpointError are ValueErrors)
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
               NotADirectoryError, LeaseHeld, LeaseLost)


def one_line(e: BaseException) -> str:
    text = " ".join(str(e.args[0] if isinstance(e, KeyError) and e.args else e).split())
    return (text or type(e).__name__)[:600]


def _ray_cause(e: BaseException) -> BaseException | None:
    """The exception a Ray Train worker / controller / task raised, out of Ray's wrappers."""
    failures = getattr(e, "worker_failures", None)  # ray.train.WorkerGroupError
    if failures:
        return next(iter(failures.values()))
    for attr in ("controller_failure", "cause"):  # ray.train.ControllerError, ray.exceptions.RayTaskError
        inner = getattr(e, attr, None)
        if isinstance(inner, BaseException) and type(e).__module__.startswith("ray."):
            return inner
    return None


def user_error(e: BaseException) -> str | None:
    """The one-line message for an error the user can fix, or None for a bug (keep its traceback)."""
    inner = _ray_cause(e)
    if inner is not None:
        while _ray_cause(inner) is not None:
            inner = _ray_cause(inner)
        why = user_error(inner) or f"{type(inner).__name__}: {one_line(inner)}"
        return f"failed in Ray: {why} (worker logs: /tmp/ray/session_latest/logs on the node)"
    if type(e).__name__ == "TrainingFailedError" or type(e).__module__.startswith("ray."):
        return f"Ray failed: {one_line(e)} (logs: /tmp/ray/session_latest/logs)"
    if isinstance(e, ClickException):  # click's usage errors: say where the help is
        ctx = getattr(e, "ctx", None)
        return " ".join(e.format_message().split()) + (f" (see `{ctx.command_path} --help`)" if ctx else "")
    if isinstance(e, USER_ERRORS):
        return one_line(e)
    if isinstance(e, ConnectionError):  # ray.init on a wrong --address, an unreachable object store
        return f"{one_line(e)} (check --address / $RAY_ADDRESS and --storage)"
    return None


def fail(message: str) -> NoReturn:
    """Tell the user ``message`` on one line of stderr and exit with code 2."""
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


class Commands(TyperGroup):
    """The command group: runs a command (parsing its arguments included) and maps the user errors
    it raises to `fail`."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, NoArgsIsHelpError):
            raise
        except Exception as e:  # noqa: BLE001 - the CLI boundary: users get a line, bugs a traceback
            message = user_error(e)
            if message is None or os.environ.get("SEQGEN_DEBUG"):
                raise
            fail(message)
