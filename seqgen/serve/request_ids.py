"""Request ids: the ``X-Request-Id`` a caller sends when it is well formed, else a fresh one.

Serve itself echoes ``X-Request-Id`` on every answer (errors and streams included) and generates
one when a request has none: its proxy and, with HAProxy, each replica's own HTTP server run
Serve's ``RequestIdMiddleware``. It echoes whatever arrived, though, and an id goes into our log
lines, so `RequestIdFilter` runs in front of that middleware (Serve's HTTP proxy callback,
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=seqgen.serve.request_ids:proxy_middlewares``, set by
`seqgen.runtime` for the local Ray and by deploy/ on clusters) and replaces an id that is too long
or holds anything but ``[A-Za-z0-9._-]``. The replica reads the id again with `request_id`, which
applies the same rule, so a log line never holds an unchecked id even without the filter.
"""

from __future__ import annotations

import re
import uuid

MAX_REQUEST_ID_CHARS = 128
HEADER = b"x-request-id"
_WELL_FORMED = re.compile(r"[A-Za-z0-9._-]{1,%d}" % MAX_REQUEST_ID_CHARS)


def well_formed(value: str | None) -> bool:
    """At most 128 characters of letters, digits, '.', '_' and '-' (and at least one)."""
    return value is not None and _WELL_FORMED.fullmatch(value) is not None


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id(headers) -> str:
    """The id of a request with these ASGI headers ([(name, value)] bytes): its ``X-Request-Id``
    when well formed, else a new one."""
    for name, value in headers:
        if name.lower() == HEADER:
            text = value.decode("latin-1")
            return text if well_formed(text) else new_request_id()
    return new_request_id()


class RequestIdFilter:
    """Pure ASGI middleware: leaves exactly one well-formed ``x-request-id`` in the request's
    headers (the caller's, or a new one), for Serve's own ``RequestIdMiddleware`` to echo."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = [(n, v) for n, v in scope["headers"] if n.lower() != HEADER]
            scope = {**scope, "headers": [*headers, (HEADER, request_id(scope["headers"]).encode())]}
        await self.app(scope, receive, send)


def proxy_middlewares() -> list:
    """Serve's HTTP proxy callback (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``)."""
    from starlette.middleware import Middleware

    return [Middleware(RequestIdFilter)]
