"""Every request's passage through a replica: its id, its key, its timings, its access-log line.

`RequestGate` is the app's outermost middleware. For each HTTP request it

* takes the request's id (`seqgen.serve.request_ids`; Serve echoes it on the answer);
* refuses a request without a valid API key (`seqgen.serve.api_keys`) with 401 and
  ``WWW-Authenticate: Bearer``, in OpenAI's error shape on /v1/ routes, else in the project's;
* keeps a `RequestRecord` in a context variable while the request runs: the route's model fills
  in its name, `RecordingEngine` the engine's timings (queue wait, time to first symbol, symbols);
* when the answer has been sent (or the client left), writes one access-log line on Serve's
  replica logger (``ray.serve``: the replica's log file, with Serve's own request id, as JSON when
  the deployment's ``logging_config`` says so) and records the request in the latency metrics.
"""

from __future__ import annotations

import contextvars
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from seqgen.serve.api_keys import PUBLIC_PATHS, ApiKeys
from seqgen.serve.request_ids import request_id

log = logging.getLogger("ray.serve")  # Serve's replica logger: its files, its format, its request id

#: routes named in metrics and logs as they are; any other path is "other" (a scan of random
#: paths must not make a metric series per path)
ROUTES = frozenset({"/", "/generate", "/score", "/write", "/healthz", "/info", "/stats", "/openapi.json",
                    "/v1/completions", "/v1/models", "/v1/chat/completions"})

_current: contextvars.ContextVar["RequestRecord | None"] = contextvars.ContextVar("seqgen_request", default=None)


def route_path(scope) -> str:
    """The request's path inside the app: without the application's route prefix (``root_path``)."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path or "/"


def route_of(path: str) -> str:
    return path if path in ROUTES else "other"


@dataclass
class RequestRecord:
    """What is known about one request, filled in as it is answered."""

    request_id: str
    route: str
    method: str
    started: float = field(default_factory=time.monotonic)
    model: str | None = None
    status: int | None = None
    queue_wait_s: float | None = None  # arrival at the engine -> joining its batch
    first_symbol_s: float | None = None  # arrival at the replica -> first symbol back from the engine
    total_s: float | None = None
    symbols: int = 0

    def engine_event(self, kind: str, payload: Any) -> None:
        if kind == "chunk":
            if self.first_symbol_s is None:
                self.first_symbol_s = time.monotonic() - self.started
            self.symbols += sum(len(outputs) for outputs in payload.values())
        elif kind == "done":
            self.queue_wait_s = payload.get("queued_s")

    def fields(self) -> dict:
        """The access-log line's fields (seconds rounded to 0.1 ms)."""
        def ms(s):
            return None if s is None else round(s, 4)

        return {"request_id": self.request_id, "route": self.route, "method": self.method, "model": self.model,
                "status": self.status, "queue_wait_s": ms(self.queue_wait_s),
                "first_symbol_s": ms(self.first_symbol_s), "total_s": ms(self.total_s), "symbols": self.symbols}


def current() -> RequestRecord | None:
    """The record of the request being answered in this task (None outside a request)."""
    return _current.get()


def current_request_id() -> str:
    """The current request's id (a fresh one outside a request)."""
    from seqgen.serve.request_ids import new_request_id

    record = current()
    return record.request_id if record is not None else new_request_id()


def note_model(name: str) -> None:
    """Name the model answering the current request (for its log line and metrics)."""
    record = current()
    if record is not None:
        record.model = name


class RecordingEngine:
    """An engine (`seqgen.serve.engine.Engine` or `EngineProcess`) whose requests carry the
    current request's id into the engine and whose events fill in the current request's record."""

    def __init__(self, engine):
        self.engine = engine

    def submit(self, job, timeout_s: float):
        record = current()
        return self.engine.submit(job, timeout_s, request_id=record.request_id if record else None)

    async def events(self, ticket) -> AsyncIterator[tuple[str, Any]]:
        record = current()
        async for kind, payload in self.engine.events(ticket):
            if record is not None:
                record.engine_event(kind, payload)
            yield kind, payload

    def __getattr__(self, name):  # snapshot, alive, stop, config, exit_reason
        return getattr(self.engine, name)


@dataclass
class GateSettings:
    """Set by the replica when it starts (the app's middleware exists before it does)."""

    keys: ApiKeys = field(default_factory=ApiKeys)
    observe: Callable[[RequestRecord], None] | None = None  # the latency metrics


def unauthorized(path: str, has_header: bool):
    from seqgen.serve.errors import error_response, openai_error_response

    message = ("invalid API key" if has_header else "this server requires an API key: "
               "send it as 'Authorization: Bearer <key>'")
    headers = {"WWW-Authenticate": "Bearer"}
    if path.startswith("/v1/"):
        return openai_error_response(401, message, "invalid_request_error", code="invalid_api_key", headers=headers)
    return error_response(401, "unauthorized", message, headers=headers)


class RequestGate:
    """Pure ASGI middleware (see the module's docstring)."""

    def __init__(self, app, settings: GateSettings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = route_path(scope)
        record = RequestRecord(request_id(scope["headers"]), route_of(path), scope["method"])
        token = _current.set(record)

        async def send_recording(message):
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)

        try:
            authorization = next((v.decode("latin-1") for n, v in scope["headers"] if n.lower() == b"authorization"),
                                 None)
            if path in PUBLIC_PATHS or self.settings.keys.allows(authorization):
                await self.app(scope, receive, send_recording)
            else:
                await unauthorized(path, authorization is not None)(scope, receive, send_recording)
        except BaseException:
            if record.status is None:
                record.status = 500  # what the server's error middleware answers
            raise
        finally:
            _current.reset(token)
            self.finish(record)

    def finish(self, record: RequestRecord) -> None:
        record.total_s = time.monotonic() - record.started
        if record.status is None:
            record.status = 499  # the client left before an answer started (nginx's convention)
        if record.route != "/healthz":  # load balancers poll it: it would drown the log
            log.info("access %s %s %s %s", record.method, record.route, record.status, record.request_id,
                     extra={"access": record.fields()})
        if self.settings.observe is not None:
            try:
                self.settings.observe(record)
            except Exception:  # noqa: BLE001 - metrics must never fail a request
                log.exception("recording request metrics failed")
