"""The engine in a process of its own, beside the replica that serves HTTP.

A Serve replica's event loop (HTTP parsing, validation, Serve's streaming path) and an engine
thread would share one interpreter and take turns on the GIL: every torch call of a step gives
the GIL up and must win it back. Here the engine (`seqgen.serve.engine.Engine`, unchanged) runs
in a child process of the replica, the split vLLM makes between its API server and its engine
core: the replica keeps the HTTP side and talks to the child over a socket pair, one pickled
message per event. A crash in the engine (a kernel, the OOM killer) then takes down the engine
alone, which the replica reports and Serve replaces. Measured (benchmarks/bench_serve.py), the
process is a few percent faster than the thread on a 2-core box: what limits the endpoint there
is CPU time in Serve's HTTP path, not the GIL (docs/serving.md).

    replica -> child   ("submit", id, job, timeout_s, request_id) | ("cancel", id) | ("stats", id) | ("stop",)
    child -> replica   ("ready",) | ("failed", why) | ("event", id, kind, payload) | ("stats", id, dict)

The pickles cross a socket pair between the replica and the child it started, never a network:
nothing untrusted is unpickled. The replica refuses work beyond ``max_streams + max_queued``
requests itself (`engine.admit`, 503 without a round trip); the child's queue is sized so that it
never has to.
If the child dies, every request in it fails and `alive()` turns false (Serve's health check
then replaces the replica); if the replica dies, the child reads EOF and exits.
"""

from __future__ import annotations

import itertools
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, AsyncIterator

from seqgen.numerics import batch_invariant_env
from seqgen.sampling import Generator, Job
from seqgen.serve.config import EngineConfig
from seqgen.serve.engine import DeadlineExceeded, Engine, EngineDown, Overloaded, StreamFailed, Ticket, admit, receive


def send(conn: Connection, message: Any) -> None:
    """Plain pickle: ``Connection.send`` would use torch's multiprocessing reductions, which pass
    tensors as shared-memory handles that only a ``multiprocessing``-started child may open."""
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def recv(conn: Connection) -> Any:
    return pickle.loads(conn.recv_bytes())


#: the errors a request can end with, by name (an exception crosses the socket as (name, message))
ERRORS = {e.__name__: e for e in (DeadlineExceeded, StreamFailed)}
START_TIMEOUT_S = 300.0  # the child imports torch and unpickles the model


class EngineProcess:
    """`Engine`'s caller side (submit / events / snapshot / alive / stop) for an engine in a child process.

    Args:
        gen: the generator to run (pickled to the child: its model travels with it).
        config: as `Engine`'s; the replica counts the requests it has handed to the child and
            refuses one more than ``max_streams + max_queued`` (`admit`).
        threads: torch threads of the child (default: this process's).
        engine_class: what the child runs: `Engine`, or a subclass importable in the child.
    """

    def __init__(self, gen: Generator, config: EngineConfig = EngineConfig(), threads: int | None = None,
                 engine_class: type[Engine] = Engine):
        import torch

        self.config = config
        self._tickets: dict[int, Ticket] = {}
        self._ids = itertools.count()
        # Two locks, never held together: the reader thread needs only `_lock` (no I/O under it), so
        # it keeps draining the child's events while a write to a full socket waits on `_send_lock`.
        self._lock = threading.Lock()  # the tickets table and the counters
        self._send_lock = threading.Lock()  # one writer on the socket at a time
        self._stats_replies: dict[int, Any] = {}
        self._stats_ready = threading.Condition(self._lock)
        self._rejected = 0
        self._completed = 0
        self._started = time.time()
        self.exit_reason: str | None = None

        ours, theirs = socket.socketpair()
        env = {**os.environ, **batch_invariant_env(), "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._proc = subprocess.Popen([sys.executable, "-m", "seqgen.serve.engine_process", str(theirs.fileno())],
                                      pass_fds=(theirs.fileno(),), env=env)
        theirs.close()
        self._conn = Connection(ours.detach())
        # the child's queue holds whatever this side admits: it never refuses first
        child_config = config.model_copy(update={"max_queued": config.max_streams + config.max_queued})
        send(self._conn, (engine_class, gen, child_config, threads or torch.get_num_threads()))
        if not self._conn.poll(START_TIMEOUT_S):
            self._kill()
            raise RuntimeError(f"the engine process did not start within {START_TIMEOUT_S:.0f} s")
        reply = recv(self._conn)
        if reply[0] != "ready":
            self._kill()
            raise RuntimeError(f"the engine process failed to start:\n{reply[1]}")
        threading.Thread(target=self._read, name="seqgen-engine-reader", daemon=True).start()

    # ------------------------------------------------------------------ the caller side (event loop)
    def submit(self, job: Job, timeout_s: float, request_id: str | None = None) -> Ticket:
        with self._lock:
            if self.exit_reason is not None:
                raise EngineDown(f"the engine is down ({self.exit_reason}); the replica is being replaced")
            try:  # the requests in the child beyond a full batch are (about) the ones waiting
                admit(self.config, max(1, len(job.rows)), len(self._tickets) - self.config.max_streams,
                      self._completed, time.time() - self._started)
            except Overloaded:
                self._rejected += 1
                raise
            tid = next(self._ids)
            ticket = Ticket.on_this_loop(job, timeout_s, on_cancel=lambda: self._cancel(tid), request_id=request_id)
            self._tickets[tid] = ticket  # before the child can answer
        self._send(("submit", tid, job, timeout_s, request_id))
        return ticket

    def events(self, ticket: Ticket) -> AsyncIterator[tuple[str, Any]]:
        return receive(ticket)

    def snapshot(self, timeout_s: float = 10.0) -> dict:
        """The child engine's counters (`Stats.as_dict`), with the requests this side refused.
        Blocks for one round trip: call it from a thread, not the event loop."""
        with self._lock:
            if self.exit_reason is not None:
                raise EngineDown(f"the engine is down ({self.exit_reason})")
            rid = next(self._ids)
        self._send(("stats", rid))
        with self._lock:
            if not self._stats_ready.wait_for(lambda: rid in self._stats_replies or self.exit_reason, timeout_s):
                raise TimeoutError(f"the engine process did not answer within {timeout_s} s")
            if rid not in self._stats_replies:
                raise EngineDown(f"the engine is down ({self.exit_reason})")
            stats = self._stats_replies.pop(rid)
            rejected = self._rejected
        stats["requests"]["rejected"] = stats["requests"].get("rejected", 0) + rejected
        return stats

    def alive(self) -> bool:
        return self.exit_reason is None and self._proc.poll() is None

    def stop(self) -> None:
        try:
            self._send(("stop",))
            self._proc.wait(timeout=10)
        except (EngineDown, subprocess.TimeoutExpired):
            self._kill()

    # ------------------------------------------------------------------ internals
    def _send(self, message: tuple) -> None:
        try:
            with self._send_lock:
                send(self._conn, message)
        except OSError as e:  # the child is gone; the reader fails what it held
            raise EngineDown(f"the engine is down ({type(e).__name__}: {e})") from None

    def _cancel(self, tid: int) -> None:
        with self._lock:
            running = self._tickets.pop(tid, None) is not None and self.exit_reason is None
        if running:
            try:
                self._send(("cancel", tid))
            except EngineDown:
                pass

    def _read(self) -> None:
        """Route the child's messages: events to their tickets, stats to whoever asked."""
        try:
            while True:
                message = recv(self._conn)
                if message[0] == "event":
                    _, tid, kind, payload = message
                    with self._lock:
                        ticket = self._tickets.get(tid)
                        if kind in ("done", "error") and ticket is not None:
                            del self._tickets[tid]
                            self._completed += kind == "done"
                    if ticket is not None:
                        if kind == "error":
                            name, text = payload
                            payload = ERRORS.get(name, StreamFailed)(text)
                        ticket.post(kind, payload)
                elif message[0] == "stats":
                    with self._lock:
                        self._stats_replies[message[1]] = message[2]
                        self._stats_ready.notify_all()
        except (EOFError, OSError):
            pass
        code = self._proc.wait()
        with self._lock:
            self.exit_reason = f"the engine process exited with code {code}"
            orphans, self._tickets = list(self._tickets.values()), {}
            self._stats_ready.notify_all()
        for ticket in orphans:
            ticket.post("error", StreamFailed(f"generation failed: {self.exit_reason}"))

    def _kill(self) -> None:
        self._proc.kill()
        self._proc.wait(timeout=10)


# ---------------------------------------------------------------------------- the child process
def child_main(fd: int) -> None:
    """Run an `Engine` for the replica at the other end of socket ``fd`` until it says stop or goes."""
    conn = Connection(fd)
    lock = threading.Lock()

    def reply(message: tuple) -> None:
        with lock:
            send(conn, message)

    try:
        import torch

        engine_class, gen, config, threads = recv(conn)
        torch.set_num_threads(threads)
        engine = engine_class(gen, config)
    except Exception:  # noqa: BLE001 - the replica reports why it could not start
        import traceback

        reply(("failed", traceback.format_exc()))
        return
    tickets: dict[int, Ticket] = {}

    def forward(tid: int, kind: str, payload: Any) -> None:
        if kind == "error":
            payload = (type(payload).__name__, str(payload))
        if kind in ("done", "error"):
            tickets.pop(tid, None)
        reply(("event", tid, kind, payload))

    reply(("ready",))
    while True:
        try:
            message = recv(conn)
        except (EOFError, OSError):
            break  # the replica is gone
        op = message[0]
        if op == "submit":
            _, tid, job, timeout_s, request_id = message
            ticket = Ticket(job, time.monotonic() + timeout_s, lambda kind, payload, tid=tid: forward(tid, kind, payload),
                            request_id=request_id)
            tickets[tid] = ticket
            try:
                engine.enqueue(ticket)
            except (Overloaded, ValueError) as e:  # the replica's own limits make this rare
                forward(tid, "error", StreamFailed(str(e)))
        elif op == "cancel":
            ticket = tickets.pop(message[1], None)
            if ticket is not None:
                ticket.cancel()
        elif op == "stats":
            reply(("stats", message[1], engine.snapshot()))
        elif op == "stop":
            break
    engine.stop()


if __name__ == "__main__":
    child_main(int(sys.argv[1]))
