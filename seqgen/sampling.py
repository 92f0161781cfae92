"""The step protocol and the one free-running loop that every generator in seqgen runs on.

A model kind (text: `seqgen.text_sampling.TextGenerator`; handwriting:
`seqgen.handwriting.sampling.HandwritingGenerator`) supplies a `Generator`: how to start a state,
how to feed a prompt teacher-forced (priming), one step ``x_t -> (output params, state)`` and its
draw ``params -> x_{t+1}`` (categorical with temperature / top-k; mixture density with probability
bias and the phi stop rule). Everything above that is written once, here:

* `Row`: one output sequence being drawn (its seed, limit, sampling options, outputs so far);
* `Job`: one prompt and the rows that run free from it (``n`` samples share one priming);
* `Decoder`: a running batch of rows. ``step()`` advances every row by one symbol or pen point
  with ONE model call, and rows can join and leave between any two steps — the loop body of
  the CLI, the tests, the benchmarks and the serving engine (`seqgen.serve.engine`) alike;
* `run`: prime jobs, then step a `Decoder` until every row has finished (offline use).

Randomness is counter-based (`seqgen.rng`): row b's draw at step t is a function of (seed_b, t)
only, so a request's output depends on its seed and never on which rows share its batch or when
it joined. A row whose model outputs are not finite fails alone (``row.error``); rows are
computed independently, so the others are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from seqgen import rng

State = Any  # a pytree (tuples / named tuples) of batch-first tensors (B, ...)

# Fewer rows than this are padded (with copies of the last row) before a model call. CPU BLAS picks
# other kernels, with another summation order, for matrices of 1-3 rows (measured with MKL sgemm:
# a row's bits differ at M = 1, 2, 3 and agree for every M >= 4), and the recurrence amplifies the
# difference until a sample changes. Padding keeps each row's result independent of its batch.
MIN_BATCH = 4


@dataclass(eq=False)
class Row:
    """One sequence being drawn."""

    seed: int  # row-specific seed (a request's seed + its row index), wrapped to int64
    limit: int  # hard length limit: at most this many symbols / points
    options: Any  # the kind's per-row sampling options (e.g. (temperature, top_k, top_p) or bias)
    context: Any = None  # the kind's per-row conditioning (e.g. a text's character ids), or None
    # sequences of outputs that end the row, left out of its outputs (text: `text_sampling.StopSequences`):
    # anything with matched(outputs) -> length of one ending outputs (0: none) and pending(outputs)
    # -> length of the longest tail that could still become one
    stop: Any = None
    keep_aux: bool = False  # also keep the per-step aux output (e.g. phi, for Fig. 13)
    drawn: int = 0
    outputs: list = field(default_factory=list)  # what `Generator.emit` made of each drawn x
    aux: list = field(default_factory=list)
    stopped: bool = False  # the kind's own stop rule fired (else it ran to ``limit``)
    error: str | None = None  # why this row failed alone (it has stopped)
    owner: Any = None  # whoever waits for the row (the serving engine's request)

    @property
    def finished(self) -> bool:
        return self.stopped or self.error is not None or self.drawn >= self.limit

    @property
    def settled(self) -> int:
        """How many outputs later steps cannot take back: all but a tail that may yet turn out to
        be the start of a stop sequence (a streaming caller releases only these)."""
        if self.stop is None or self.finished:
            return len(self.outputs)
        return len(self.outputs) - self.stop.pending(self.outputs)


@dataclass(eq=False)
class Job:
    """A prompt (fed teacher-forced) and the rows that then run free from its final state."""

    prompt: Tensor  # (T, ...) inputs fed before free running; T may be 0
    first: Tensor  # (...) the first free-running input (the prompt's last symbol / pen point)
    rows: list[Row]
    targets: Tensor | None = None  # (T,) scoring: prompt[t] predicts targets[t]; then no rows
    # rows whose contexts differ (the lines of a handwriting page) read the prompt each under its
    # own context (a primed line's window spans c' = prime text + its own text), as one batch
    per_row_prime: bool = False

    def prime_rows(self) -> list[Row]:
        """The rows the prompt is fed for: each row, or (sharing one context) the first for all."""
        return self.rows if self.per_row_prime else self.rows[:1]


class Generator(Protocol):
    """The step protocol a model kind implements; shapes are batch-first, B rows."""

    lanes: int  # uniforms in [0, 1) each row consumes per step (`seqgen.rng.uniform`)

    def initial_state(self, batch: int) -> State: ...

    def context(self, rows: list[Row]) -> Any:
        """The rows' conditioning batched (e.g. padded character ids), or None."""

    def options(self, rows: list[Row]) -> Any:
        """The rows' sampling options batched as tensors."""

    def prefill(self, inputs: Tensor, state: State, context: Any) -> tuple[Tensor, State]:
        """Teacher-forced (B, T, ...) -> (outputs (B, T, ...), state after the last input)."""

    def step(self, x: Tensor, state: State, context: Any) -> tuple[Tensor, Any, State]:
        """One step: x (B, ...) -> (output params (B, ...), aux (B, ...) or None, new state)."""

    def draw(self, params: Tensor, aux: Any, options: Any, context: Any, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(x_next (B, ...), stop (B,) bool: the kind's stop rule, ok (B,) bool: params finite)."""

    def emit(self, x: Tensor) -> list:
        """x_next (B, ...) -> one plain Python value per row (a token id, a pen point)."""


def tmap(fn, *trees):
    """``fn`` over the tensors of same-shaped trees of tuples / named tuples (None and other leaves
    are kept from the first tree). torch's pytree does the same at ~10x the cost per step."""
    first = trees[0]
    if isinstance(first, Tensor):
        return fn(*trees)
    if isinstance(first, tuple):
        out = [tmap(fn, *parts) for parts in zip(*trees)]
        return type(first)(*out) if hasattr(first, "_fields") else tuple(out)
    return first


def cat_states(states: list[State]) -> State:
    return states[0] if len(states) == 1 else tmap(lambda *ts: torch.cat(ts, 0), *states)


def select_state(state: State, index: Tensor) -> State:
    return tmap(lambda t: t.index_select(0, index), state)


def repeat_state(state: State, n: int) -> State:
    return state if n == 1 else tmap(lambda t: t.expand(n, *t.shape[1:]).contiguous(), state)


def pad_rows(tree, n: int):
    """Every tensor of ``tree`` (B, ...) with B < n padded to n rows by repeating its last row."""
    def pad(t):
        return t if t.shape[0] >= n else torch.cat([t, t[-1:].expand(n - t.shape[0], *t.shape[1:])])

    return tmap(pad, tree)


def take_rows(tree, n: int):
    return tmap(lambda t: t if t.shape[0] == n else t[:n], tree)


def prefill(gen: Generator, inputs: Tensor, state: State, context: Any) -> tuple[Tensor, State]:
    """`Generator.prefill` with small batches padded to ``MIN_BATCH`` rows (see there)."""
    B = inputs.shape[0]
    outputs, state = gen.prefill(*pad_rows((inputs, state, context), MIN_BATCH))
    return take_rows((outputs, state), B)


def step(gen: Generator, x: Tensor, state: State, context: Any):
    """`Generator.step` with small batches padded to ``MIN_BATCH`` rows."""
    B = x.shape[0]
    return take_rows(gen.step(*pad_rows((x, state, context), MIN_BATCH)), B)


def prime(gen: Generator, job: Job) -> tuple[State, Tensor | None]:
    """(state after the whole prompt: one row, or one per row with ``per_row_prime``; the first
    row's outputs (T, ...) or None)."""
    rows = job.prime_rows()
    state = gen.initial_state(max(len(rows), 1))
    if len(job.prompt) == 0:
        return state, None
    context = gen.context(rows) if rows else None
    inputs = job.prompt[None].expand(max(len(rows), 1), *job.prompt.shape)
    outputs, state = prefill(gen, inputs, state, context)
    return state, outputs[0]


class Decoder:
    """A running batch of rows, advanced one symbol at a time by ONE model call per step."""

    def __init__(self, gen: Generator):
        self.gen = gen
        self.rows: list[Row] = []
        self.state: State = None
        self.x: Tensor | None = None
        self._batched = None  # (stream keys, options, context) of the current rows

    def __len__(self) -> int:
        return len(self.rows)

    def join(self, rows: list[Row], state: State, x: Tensor) -> None:
        """Add rows with their state (B_new, ...) and next inputs (B_new, ...)."""
        if not rows:
            return
        self.rows += rows
        self.state = state if self.state is None else cat_states([self.state, state])
        self.x = x if self.x is None else torch.cat([self.x, x])
        self._batched = None

    def join_job(self, job: Job, state: State) -> None:
        """Add a primed job's rows: they all start from its one-row ``state`` (or each from its own
        row of it, ``per_row_prime``)."""
        n = len(job.rows)
        self.join(job.rows, repeat_state(state, n), job.first.expand(n, *job.first.shape).clone())

    def remove(self, drop: set[int]) -> None:
        """Remove the rows at these positions (finished, failed or cancelled)."""
        if not drop:
            return
        keep = [i for i in range(len(self.rows)) if i not in drop]
        self.rows = [self.rows[i] for i in keep]
        if keep:
            index = torch.tensor(keep, device=self.x.device)
            self.state, self.x = select_state(self.state, index), self.x.index_select(0, index)
        else:
            self.state, self.x = None, None
        self._batched = None

    def step(self) -> list[Row]:
        """Draw one symbol for every row; returns (and removes) the rows that finished or failed."""
        if not self.rows:
            return []
        gen = self.gen
        if self._batched is None:
            device = self.x.device
            seeds = torch.tensor([r.seed for r in self.rows], dtype=torch.long, device=device)
            self._batched = rng.key(seeds), gen.options(self.rows), gen.context(self.rows)
        keys, options, context = self._batched
        drawn = torch.tensor([r.drawn for r in self.rows], dtype=torch.long, device=keys.device)
        params, aux, self.state = step(gen, self.x, self.state, context)
        u = rng.uniform(keys, drawn, gen.lanes, params.dtype if params.is_floating_point() else torch.float32)
        x_next, stop, ok = gen.draw(params, aux, options, context, u)
        values = gen.emit(x_next)
        stop, ok = stop.tolist(), ok.tolist()
        aux_cpu = aux.cpu() if aux is not None and any(r.keep_aux for r in self.rows) else None
        done = set()
        for i, row in enumerate(self.rows):
            if not ok[i]:
                row.error = f"numerical fault: the model's outputs are not finite at step {row.drawn + 1}"
            else:
                row.outputs.append(values[i])
                if aux_cpu is not None and row.keep_aux:
                    row.aux.append(aux_cpu[i])
                row.drawn += 1  # draws, the counter of the row's random stream: outputs may be fewer
                row.stopped = bool(stop[i])
                if row.stop is not None and (matched := row.stop.matched(row.outputs)):
                    del row.outputs[-matched:]  # checked every step: the row leaves the batch at once
                    row.stopped = True
            if row.finished:
                done.add(i)
        self.x = x_next
        finished = [self.rows[i] for i in sorted(done)]
        self.remove(done)
        return finished


@torch.inference_mode()
def run(gen: Generator, jobs: list[Job]) -> list[Job]:
    """Prime every job, then run all their rows free in one batch until each has finished.

    Rows fill ``row.outputs`` (and ``row.aux`` with ``keep_aux``). A row whose model outputs were
    not finite is an error here (the serving engine instead fails that request alone).
    """
    decoder = Decoder(gen)
    for job in jobs:
        state, _ = prime(gen, job)
        decoder.join_job(job, state)
    while decoder.rows:
        for row in decoder.step():
            if row.error:
                raise FloatingPointError(row.error)
    return jobs
