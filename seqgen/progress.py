"""Progress of long work (preprocessing, evaluation, searches): a rich bar on a terminal, and a
plain line every few seconds when stderr is a log file, so a job under ``ray job submit`` or in CI
shows that it is alive and how fast it goes.

    with Progress("preprocess ptb: count", total=len(chunks), unit="tasks") as p:
        for result in map_tasks(...):
            p.advance(1, nbytes=chunk_bytes)        # -> "12/40 tasks, 14.2 MB/s"
    for r in track(map_tasks(...), "encode", total=n, unit="tasks", sizes=bytes_per_task): ...

``note`` adds free text; `tune_callback` keeps a Ray Tune search's trials and best score on one.
Log lines go out at most every ``$SEQGEN_PROGRESS_EVERY`` seconds (default 10), plus one final
line for work that printed any; ``SEQGEN_PROGRESS=0`` silences both forms. Training (``train.loop``)
counts its steps on one and prints each evaluation's metrics through `Progress.print`.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator, Sequence, TextIO


def _enabled() -> bool:
    return os.environ.get("SEQGEN_PROGRESS", "1").lower() not in ("0", "false", "no", "off")


def log_interval() -> float:
    return float(os.environ.get("SEQGEN_PROGRESS_EVERY", "10"))


def _rate(amount: float, seconds: float) -> float:
    return amount / seconds if seconds > 0 else 0.0


class Progress:
    """Counts ``completed`` of ``total`` units (total may be None: unknown), optional bytes
    (shown as MB/s) and a free-text note; draws itself on ``stream`` (default stderr)."""

    def __init__(self, description: str, total: int | None = None, unit: str = "", *, completed: int = 0,
                 stream: TextIO | None = None, every: float | None = None, enabled: bool | None = None):
        self.description, self.total, self.unit = description, total, unit
        self.stream = stream or sys.stderr
        self.every = log_interval() if every is None else every
        self.enabled = _enabled() if enabled is None else enabled
        self.completed, self.nbytes, self.info = completed, 0, ""
        self._initial = completed  # work done before (a resumed run): not part of the rate
        self.start = self._last_line = time.monotonic()
        self._lines = 0
        self._bar = None
        if self.enabled and self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress
            from rich.progress import TextColumn, TimeElapsedColumn

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn(unit), TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                     console=Console(file=self.stream), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(description, total=total, completed=completed, info="")

    # ---------------------------------------------------------------------------------------
    def advance(self, n: int = 1, nbytes: int = 0) -> None:
        self.update(self.completed + n, nbytes=self.nbytes + nbytes)

    def note(self, info: str) -> None:
        """Free text shown after the counts (e.g. 'best score 1.234')."""
        self.update(self.completed, info=info)

    def update(self, completed: int, total: int | None = None, nbytes: int | None = None, info: str | None = None) -> None:
        self.completed = completed
        self.total = self.total if total is None else total
        self.nbytes = self.nbytes if nbytes is None else nbytes
        self.info = self.info if info is None else info
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, total=self.total, info=self._extra())
        elif time.monotonic() - self._last_line >= self.every:
            self._line()

    def print(self, line: str) -> None:
        """A line of output (e.g. an evaluation's metrics) above the bar, or on stdout in logs."""
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self.enabled and self._lines:  # a log that showed progress also shows the end
            self._line(final=True)
        self.enabled = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------
    def summary(self) -> str:
        """'12/40 tasks (30%), 14.2 MB/s, best 1.23, 0:12 elapsed'."""
        elapsed = time.monotonic() - self.start
        count = f"{self.completed}/{self.total}" if self.total else f"{self.completed}"
        pct = f" ({100 * self.completed / self.total:.0f}%)" if self.total else ""
        parts = [f"{count} {self.unit}".rstrip() + pct]
        extra = self._extra()
        if extra:
            parts.append(extra)
        parts.append(f"{int(elapsed) // 60}:{int(elapsed) % 60:02d} elapsed")
        return ", ".join(parts)

    def _extra(self) -> str:
        elapsed = time.monotonic() - self.start
        parts = []
        if self.nbytes:
            parts.append(f"{_rate(self.nbytes, elapsed) / 1e6:.1f} MB/s")
        elif self.unit and self.completed > self._initial and self._bar is None:
            parts.append(f"{_rate(self.completed - self._initial, elapsed):.3g} {self.unit}/s")
        if self.info:
            parts.append(self.info)
        return ", ".join(parts)

    def _line(self, final: bool = False) -> None:
        self._last_line = time.monotonic()
        self._lines += 1
        print(f"[{self.description}] {'done: ' if final else ''}{self.summary()}", file=self.stream, flush=True)


def track(items: Iterable, description: str, total: int | None = None, unit: str = "",
          sizes: Sequence[int] | None = None, **kw) -> Iterator:
    """Yield ``items``, advancing a `Progress` by one (and ``sizes[i]`` bytes) per item."""
    with Progress(description, total, unit, **kw) as p:
        for i, item in enumerate(items):
            yield item
            p.advance(1, sizes[i] if sizes is not None else 0)


def tune_callback(progress: Progress, metric: str = "score", mode: str = "min"):
    """A ``ray.tune.Callback`` that keeps ``progress`` at trials done / total with a note of the
    trials running and the best ``metric`` so far. Tune runs callbacks in the driver process, and
    pickles them with its experiment state: the copy it pickles drops ``progress`` (streams and
    terminals do not pickle), and the class captures nothing, so cloudpickle copies no stream."""
    from ray.tune import Callback

    class TuneProgress(Callback):
        def __init__(self, progress: Progress, metric: str, mode: str):
            self.progress, self.metric, self.sign = progress, metric, 1.0 if mode == "min" else -1.0
            self.running: set[str] = set()
            self.done = self.failed = 0
            self.best: float | None = None

        def __getstate__(self):
            return {**self.__dict__, "progress": None}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.running.add(trial.trial_id)
            self._show()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            value = result.get(self.metric)
            if isinstance(value, (int, float)) and value == value and (
                    self.best is None or self.sign * value < self.sign * self.best):
                self.best = float(value)
                self._show()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._finish(trial)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.failed += 1
            self._finish(trial)

        def _finish(self, trial):
            self.running.discard(trial.trial_id)
            self.done += 1
            self._show()

        def _show(self):
            if self.progress is None:  # an unpickled copy (Tune's saved experiment state)
                return
            best = "none yet" if self.best is None else f"{self.best:.4g}"
            failed = f", {self.failed} failed" if self.failed else ""
            self.progress.update(self.done, info=f"{len(self.running)} running{failed}, best {self.metric} {best}")

    return TuneProgress(progress, metric, mode)
