"""Iteration-level (continuous) batching of recurrent generation: one engine per Serve replica.

Request-level batching runs a batch until its longest request is done, so a 20-symbol request
waits behind a 2,000-symbol one and a finished row keeps its slot. Here (the idea of BatchMaker,
EuroSys 2018, and of Orca/vLLM for transformers) one background thread owns a running batch of
rows (`seqgen.sampling.Decoder`) and, between any two steps of it:

* removes the rows of finished, failed, cancelled (client gone) and expired (deadline) requests;
* admits waiting requests while there are free slots (a request with n samples needs n), FIFO;
* primes the admitted prompts chunk by chunk, several joiners in one model call per chunk
  length, so a long prompt never stalls the running rows for more than one chunk.

A request that finds ``max_queued`` requests already waiting is refused at once (`Overloaded`,
HTTP 503) instead of queueing without bound (`admit`: the one capacity check, also made by the
replica in front of an engine process). Outputs go back to the request's asyncio queue in
chunks: the first symbol at once (time to first symbol), then at most every ``flush_interval_s``,
and with many requests running about ``max_chunks_per_s`` chunks a second over all of them. A chunk crosses the
replica's event loop and Serve's streaming path, which cost far more than drawing a symbol, so
the cap keeps streaming's share of the replica's CPU bounded however many requests run. A numerical fault ends its own request only: rows are computed
independently, so a non-finite output in one row cannot reach another (`Decoder.step`).

Thread model: `submit` and the event iterators run on the replica's asyncio loop; the engine
thread only touches tickets through their ``cancelled`` flag and ``post`` (thread-safe).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

import torch

from seqgen.sampling import Decoder, Generator, Job, cat_states, prefill, select_state
from seqgen.serve.config import EngineConfig

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """The engine's queue is full; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(Exception):
    """The request's deadline passed before it was done."""


class StreamFailed(Exception):
    """The request failed inside the engine (a numerical fault, or an error in a model call)."""


class EngineDown(Exception):
    """The replica's engine is gone (its process died); Serve's health check replaces the replica."""


@dataclass(eq=False)
class Ticket:
    """One request inside the engine, and its way back to the caller."""

    job: Job
    deadline: float  # time.monotonic() by which it must be done
    send: Callable[[str, Any], None]  # hands an event to the caller; called from the engine thread
    inbox: asyncio.Queue | None = None  # the caller's end, when it is an asyncio loop of this process
    on_cancel: Callable[[], None] | None = None  # tells whoever runs the request that it is cancelled
    request_id: str | None = None  # the HTTP request's id (seqgen.serve.request_ids), for log lines
    cancelled: bool = False
    # engine-side progress
    submitted: float = field(default_factory=time.monotonic)
    admitted: float | None = None  # time.monotonic() when it left the queue for the batch
    state: Any = None  # the one-row state while its prompt is being fed
    cursor: int = 0  # prompt inputs fed so far
    log_prob: float = 0.0  # scoring: sum of log p(target) so far
    sent: list[int] = field(default_factory=list)  # outputs already posted, per row
    posted: float = 0.0  # time.monotonic() of the last chunk posted
    rows_left: int = 0

    @classmethod
    def on_this_loop(cls, job: Job, timeout_s: float, on_cancel: Callable[[], None] | None = None,
                     request_id: str | None = None) -> "Ticket":
        """A ticket whose events arrive on the running asyncio loop (read them with `receive`)."""
        loop, inbox = asyncio.get_running_loop(), asyncio.Queue()
        return cls(job, time.monotonic() + timeout_s,
                   lambda kind, payload: loop.call_soon_threadsafe(inbox.put_nowait, (kind, payload)),
                   inbox, on_cancel, request_id)

    def queue_wait(self) -> float:
        """Seconds between arriving at the engine and joining its batch."""
        return (self.admitted or time.monotonic()) - self.submitted

    @property
    def slots(self) -> int:
        return max(1, len(self.job.rows))

    def post(self, kind: str, payload: Any = None) -> None:
        """Hand an event to the caller (from any thread); a caller that cannot take it any more
        (its loop closed, its connection gone) is gone, which is a cancellation."""
        try:
            self.send(kind, payload)
        except (RuntimeError, OSError):
            self.cancelled = True

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            if self.on_cancel is not None:
                self.on_cancel()


async def receive(ticket: Ticket) -> AsyncIterator[tuple[str, Any]]:
    """The ticket's events ("chunk" {row: [outputs]}, then "done" {...}); raises the engine's
    error. Chunks that queued up while the caller was busy come as one. If the caller stops
    iterating (client gone, task cancelled) the request is cancelled and its slots are freed at
    the engine's next step."""
    try:
        pending = None
        while True:
            if pending is None:
                remaining = ticket.deadline - time.monotonic() + 5.0  # the engine enforces the deadline
                try:
                    pending = await asyncio.wait_for(ticket.inbox.get(), timeout=max(remaining, 0.1))
                except asyncio.TimeoutError:
                    raise DeadlineExceeded("the request's deadline passed") from None
            (kind, payload), pending = pending, None
            while kind == "chunk" and not ticket.inbox.empty():
                nxt = ticket.inbox.get_nowait()
                if nxt[0] != "chunk":
                    pending = nxt
                    break
                payload = {i: payload.get(i, []) + nxt[1].get(i, []) for i in payload.keys() | nxt[1].keys()}
            if kind == "error":
                raise payload
            yield kind, payload
            if kind == "done":
                return
    finally:
        ticket.cancel()  # a no-op for a finished ticket: the engine no longer holds it


def admit(config: EngineConfig, samples: int, waiting: int, completed: int, elapsed_s: float) -> None:
    """The one capacity check, made where requests queue: a request of ``samples`` rows may join
    when fewer than ``max_queued`` requests are ``waiting``; else `Overloaded` at once, with a rough
    wait: the queue drains at about the completion rate (``completed`` requests in ``elapsed_s``),
    1-60 s. More samples than the batch has rows is the client's error (ValueError, 400)."""
    if samples > config.max_streams:
        raise ValueError(f"{samples} samples in one request exceed this server's {config.max_streams} streams")
    if waiting >= config.max_queued:
        rate = completed / max(elapsed_s, 1e-6)
        retry_after = max(1.0, min(60.0, waiting / rate)) if rate > 0 else 1.0
        raise Overloaded(f"the server is at capacity ({config.max_streams} streams running, {waiting} requests "
                         "waiting)", retry_after)


class Stats:
    """Counters of one engine (written by the engine thread, read by anyone)."""

    def __init__(self, max_streams: int):
        self.started = time.time()
        self.max_streams = max_streams
        self.counts: Counter = Counter()  # admitted, completed, rejected, cancelled, expired, failed
        self.steps = 0
        self.row_steps = 0  # sum over steps of the rows stepped: occupancy = row_steps / (steps * max)
        self.symbols = 0
        self.prefill_inputs = 0
        self.busy_s = 0.0
        self.queue_length = 0
        self.running_rows = 0
        self.batch_sizes: Counter = Counter()  # rows per step -> steps
        self._window: deque = deque(maxlen=256)  # (time, symbols) for the recent rate

    def step(self, rows: int, seconds: float) -> None:
        self.steps += 1
        self.row_steps += rows
        self.symbols += rows
        self.busy_s += seconds
        self.batch_sizes[rows] += 1
        self._window.append((time.monotonic(), self.symbols))

    def symbols_per_s(self) -> float:
        """Symbols drawn per second over the last few seconds (0 when idle)."""
        now = time.monotonic()
        recent = [(t, s) for t, s in list(self._window) if now - t < 5.0]  # list(): one atomic copy
        if len(recent) < 2 or now - recent[-1][0] > 1.0:
            return 0.0
        (t0, s0), (t1, s1) = recent[0], recent[-1]
        return (s1 - s0) / max(t1 - t0, 1e-6)

    def as_dict(self) -> dict:
        return {
            "uptime_s": time.time() - self.started,
            "requests": dict(self.counts),
            "steps": self.steps,
            "symbols_generated": self.symbols,
            "prefill_inputs": self.prefill_inputs,
            "mean_batch_occupancy": self.row_steps / (self.steps * self.max_streams) if self.steps else 0.0,
            "max_batch_size_seen": max(self.batch_sizes, default=0),
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "running_rows": self.running_rows,
            "queue_length": self.queue_length,
            "symbols_per_s": self.symbols_per_s(),
            "busy_s": self.busy_s,
        }


class Engine:
    """Continuous batching over one `Generator` (one model) in a background thread, with the
    limits and streaming granularity of ``config`` (`EngineConfig`)."""

    def __init__(self, gen: Generator, config: EngineConfig = EngineConfig()):
        self.gen = gen
        self.config = config
        self.stats = Stats(config.max_streams)
        self.decoder = Decoder(gen)
        self.exit_reason: str | None = None  # why the engine thread ended, once it has
        self._waiting: deque[Ticket] = deque()
        self._priming: list[Ticket] = []
        self._lock = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="seqgen-engine", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- caller side (event loop)
    def submit(self, job: Job, timeout_s: float, request_id: str | None = None) -> Ticket:
        """Queue ``job`` for the caller's asyncio loop (read its events with `events`); raises
        `Overloaded` at once when ``max_queued`` requests are waiting."""
        return self.enqueue(Ticket.on_this_loop(job, timeout_s, request_id=request_id))

    def enqueue(self, ticket: Ticket) -> Ticket:
        """Queue a ticket whose events go wherever ``ticket.send`` sends them (any thread)."""
        with self._lock:
            try:
                admit(self.config, ticket.slots, len(self._waiting), self.stats.counts["completed"],
                      time.time() - self.stats.started)
            except Overloaded:
                self.stats.counts["rejected"] += 1
                raise
            self._waiting.append(ticket)
            self.stats.queue_length = len(self._waiting)
            self._lock.notify()
        return ticket

    def events(self, ticket: Ticket) -> AsyncIterator[tuple[str, Any]]:
        """A submitted ticket's events (`receive`)."""
        return receive(ticket)

    def snapshot(self) -> dict:
        """The engine's counters (`Stats.as_dict`)."""
        return self.stats.as_dict()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify()
        self._thread.join(timeout=10)

    # ---------------------------------------------------------------- engine thread
    def _run(self) -> None:
        # inference mode is per thread; like `sampling.run`, it skips autograd's bookkeeping (version
        # counters, view tracking) that no_grad still does on every op of every step
        try:
            with torch.inference_mode():
                self._loop()
        finally:
            self.exit_reason = "the engine stopped" if self._stopped else "the engine thread failed"

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not (self._stopped or self._waiting or self._priming or len(self.decoder)):
                    self._lock.wait()
                if self._stopped:
                    return
                self._admit()
            try:
                self._iteration()
            except Exception as e:  # noqa: BLE001 - a failed model call fails its requests, not the engine
                ids = sorted({row.owner[0].request_id or "-" for row in self.decoder.rows}
                             | {t.request_id or "-" for t in self._priming})
                log.exception("engine iteration failed (requests %s)", ", ".join(ids))
                self._fail_all(StreamFailed(f"generation failed: {type(e).__name__}: {e}"))

    def _admit(self) -> None:
        """Waiting requests -> priming, FIFO, while slots are free (called with the lock held)."""
        used = len(self.decoder) + sum(t.slots for t in self._priming)
        while self._waiting and used + self._waiting[0].slots <= self.config.max_streams:
            ticket = self._waiting.popleft()
            if ticket.cancelled:
                self.stats.counts["cancelled"] += 1
                continue
            ticket.admitted = time.monotonic()
            ticket.state = self.gen.initial_state(max(len(ticket.job.prime_rows()), 1))
            ticket.sent = [0] * len(ticket.job.rows)
            ticket.rows_left = len(ticket.job.rows)
            for i, row in enumerate(ticket.job.rows):
                row.owner = (ticket, i)
            self._priming.append(ticket)
            self.stats.counts["admitted"] += 1
            used += ticket.slots
        self.stats.queue_length = len(self._waiting)

    def _iteration(self) -> None:
        t0 = time.perf_counter()
        self._reap()
        self._prime()
        rows = len(self.decoder)
        if rows:
            finished = self.decoder.step()
            self._dispatch(finished)
            self.stats.step(rows, time.perf_counter() - t0)
        self.stats.running_rows = len(self.decoder)

    def _reap(self) -> None:
        """Drop rows and primings of cancelled and expired requests; expire waiting ones."""
        now = time.monotonic()
        with self._lock:
            for ticket in [t for t in self._waiting if t.cancelled or now > t.deadline]:
                self._waiting.remove(ticket)
                self._end(ticket, DeadlineExceeded("the request's deadline passed while it waited for a slot")
                          if not ticket.cancelled else None)
            self.stats.queue_length = len(self._waiting)
        gone = {t for t in self._priming if t.cancelled or now > t.deadline}
        gone |= {row.owner[0] for row in self.decoder.rows if row.owner[0].cancelled or now > row.owner[0].deadline}
        if not gone:
            return
        self._priming = [t for t in self._priming if t not in gone]
        self.decoder.remove({i for i, row in enumerate(self.decoder.rows) if row.owner[0] in gone})
        for ticket in gone:
            self._end(ticket, None if ticket.cancelled else DeadlineExceeded("the request's deadline passed"))

    def _end(self, ticket: Ticket, error: Exception | None) -> None:
        """A request leaves the engine early: cancelled (error None) or failed."""
        if error is None:
            self.stats.counts["cancelled"] += 1
            return
        outcome = "expired" if isinstance(error, DeadlineExceeded) else "failed"
        self.stats.counts[outcome] += 1
        log.warning("request %s %s: %s", ticket.request_id or "-", outcome, error)
        ticket.post("error", error)

    def _prime(self) -> None:
        """Feed one chunk of every priming request's prompt; requests with equal chunk lengths share
        one model call. Finished prompts join the running batch (or, when scoring, are answered)."""
        if not self._priming:
            return
        groups: dict[int, list[Ticket]] = {}
        for ticket in self._priming:
            groups.setdefault(min(self.config.prefill_chunk, len(ticket.job.prompt) - ticket.cursor), []).append(ticket)
        for length, tickets in groups.items():
            if length > 0:
                self._prime_group(length, tickets)
        still = []
        for ticket in self._priming:
            if ticket.cursor < len(ticket.job.prompt):
                still.append(ticket)
            elif ticket.job.targets is not None:  # scoring ends with its prompt
                self.stats.counts["completed"] += 1
                ticket.post("done", {"log_prob": ticket.log_prob, "tokens": len(ticket.job.targets),
                                     "queued_s": ticket.queue_wait()})
            else:
                self.decoder.join_job(ticket.job, ticket.state)
                ticket.state = None
        self._priming = still

    def _prime_group(self, length: int, tickets: list[Ticket]) -> None:
        # one batch row per prime row of every ticket (one, or each row of a per_row_prime job)
        rows = [t.job.prime_rows() for t in tickets]
        counts = [max(len(r), 1) for r in rows]
        inputs = torch.cat([t.job.prompt[t.cursor : t.cursor + length][None].expand(k, length, *t.job.prompt.shape[1:])
                            for t, k in zip(tickets, counts)])
        with_rows = all(rows)
        context = self.gen.context([r for rs in rows for r in rs]) if with_rows else None
        outputs, state = prefill(self.gen, inputs, cat_states([t.state for t in tickets]), context)
        start = 0
        for ticket, k in zip(tickets, counts):
            mine = torch.arange(start, start + k, device=inputs.device)
            ticket.state = state if len(tickets) == 1 else select_state(state, mine)
            if ticket.job.targets is not None:
                ticket.log_prob += self.gen.log_prob(outputs[start], ticket.job.targets[ticket.cursor : ticket.cursor + length])
            ticket.cursor += length
            start += k
        self.stats.prefill_inputs += length * len(tickets)

    def _dispatch(self, finished: list) -> None:
        """Post each request's new outputs: its first symbol at once, then at most every
        ``flush_interval_s``, and everything when a row finishes."""
        now = time.monotonic()
        running = len({row.owner[0] for row in self.decoder.rows})
        interval = max(self.config.flush_interval_s, running / self.config.max_chunks_per_s)
        chunks: dict[Ticket, dict[int, list]] = {}
        for row in [*self.decoder.rows, *finished]:
            ticket, i = row.owner
            sent, ready = ticket.sent[i], row.settled
            if ready > sent and (row.finished or sent == 0 or now - ticket.posted >= interval):
                chunks.setdefault(ticket, {})[i] = row.outputs[sent:ready]
                ticket.sent[i] = ready
        for ticket, chunk in chunks.items():
            ticket.posted = now
            ticket.post("chunk", chunk)
        failed = {row.owner[0]: row.error for row in finished if row.error}
        for ticket, message in failed.items():  # the request fails alone; its other rows leave too
            self.decoder.remove({i for i, row in enumerate(self.decoder.rows) if row.owner[0] is ticket})
            self._end(ticket, StreamFailed(message))
        for row in finished:
            ticket = row.owner[0]
            if ticket in failed:
                continue
            ticket.rows_left -= 1
            if ticket.rows_left == 0:
                self.stats.counts["completed"] += 1
                ticket.post("done", {"rows": [{"length": len(r.outputs), "stopped": r.stopped} for r in ticket.job.rows],
                                     "queued_s": ticket.queue_wait()})

    def _fail_all(self, error: Exception) -> None:
        """After an unexpected error in a model call: fail every request being worked on."""
        tickets = {row.owner[0] for row in self.decoder.rows} | set(self._priming)
        self.decoder.remove(set(range(len(self.decoder))))
        self._priming = []
        for ticket in tickets:
            self._end(ticket, error)
