"""One JSON error shape for every failure, and the status that tells whose fault it was.

4xx is the client's fault: 400 a text the model cannot read (naming the symbols), 401 a missing or
wrong API key (`seqgen.serve.access`), 404 an unknown style, model or route, 413 a body over the limit, 422 a body that is not valid JSON or breaks the schema.
5xx is the server's: 503 at capacity (with ``Retry-After``), 504 past the request's deadline,
500 anything else (a numerical fault of the model, a bug). Every route documents the statuses it
can answer (`responses`), so the OpenAPI document and the server agree.

The OpenAI-compatible routes (``/v1/...``, `seqgen.serve.openai_api`) answer the same statuses in
OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, which its client libraries
read (`openai_payload`).
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from seqgen.serve.engine import DeadlineExceeded, EngineDown, Overloaded, StreamFailed
from seqgen.serve.schemas import MAX_BODY_BYTES, ErrorBody

ENGINE_DOWN_RETRY_S = 5  # about one health-check period: Serve has replaced the replica by then


class UnknownSymbols(ValueError):
    """A prompt or text holds symbols outside the model's vocabulary (400)."""

    def __init__(self, symbols: list[str], message: str):
        super().__init__(message)
        self.symbols = symbols


class NotFound(Exception):
    """A named thing (a style, a dataset line) does not exist (404)."""


class SafeJSONResponse(JSONResponse):
    """ASCII-escaped JSON (a lone surrogate from a request cannot break the encoder); no NaN."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def error_response(status: int, error: str, message: str, headers: dict | None = None, **extra) -> SafeJSONResponse:
    return SafeJSONResponse({"error": error, "message": message, **extra}, status_code=status, headers=headers)


def error_payload(exc: Exception) -> tuple[int, dict, dict | None]:
    """(status, body, headers) for an exception raised while answering a request."""
    if isinstance(exc, UnknownSymbols):
        return 400, {"error": "bad_request", "message": str(exc), "unknown_symbols": exc.symbols}, None
    if isinstance(exc, ValueError):
        return 400, {"error": "bad_request", "message": str(exc)}, None
    if isinstance(exc, NotFound):
        return 404, {"error": "not_found", "message": str(exc)}, None
    if isinstance(exc, Overloaded):
        retry = str(max(1, math.ceil(exc.retry_after)))
        return 503, {"error": "overloaded", "message": str(exc)}, {"Retry-After": retry}
    if isinstance(exc, EngineDown):
        return 503, {"error": "unavailable", "message": str(exc)}, {"Retry-After": str(ENGINE_DOWN_RETRY_S)}
    if isinstance(exc, DeadlineExceeded):
        return 504, {"error": "deadline_exceeded", "message": str(exc)}, None
    if isinstance(exc, StreamFailed):
        return 500, {"error": "generation_failed", "message": str(exc)}, None
    return 500, {"error": "internal_error", "message": f"{type(exc).__name__}: {exc}"}, None


def openai_route(scope) -> bool:
    """Whether the request is for an OpenAI-compatible route (answered in OpenAI's error shape)."""
    from seqgen.serve.access import route_path

    return route_path(scope).startswith("/v1/")


def openai_payload(status: int, body: dict) -> dict:
    """The project's error ``body`` in OpenAI's shape (the same message; our code as its code)."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": body["message"], "type": kind, "param": None, "code": body["error"]}}


def openai_error_response(status: int, message: str, kind: str, code: str | None = None,
                          headers: dict | None = None) -> SafeJSONResponse:
    return SafeJSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}},
                            status_code=status, headers=headers)


def _answer(request: Request, status: int, body: dict, headers: dict | None = None) -> SafeJSONResponse:
    """An error answer in the shape of the route's API."""
    if openai_route(request.scope):
        body = openai_payload(status, body)
    return SafeJSONResponse(body, status_code=status, headers=headers)


async def handle_error(request: Request, exc: Exception) -> SafeJSONResponse:
    status, body, headers = error_payload(exc)
    return _answer(request, status, body, headers)


async def handle_validation_error(request: Request, exc: RequestValidationError) -> SafeJSONResponse:
    # Only location, message and type: echoing the input back could be huge, NaN (unencodable)
    # or hold objects that are not JSON.
    details = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in exc.errors()
    ]
    summary = "; ".join(f"{'.'.join(d['loc'][1:]) or 'body'}: {d['msg']}" for d in details[:5])
    return _answer(request, 422, {"error": "invalid_request", "message": summary or "invalid request", "detail": details})


async def handle_http_error(request: Request, exc: HTTPException) -> SafeJSONResponse:
    """Errors raised by the framework itself (unknown route 404, wrong method 405, a body it cannot
    decode 400) in the same shape."""
    codes = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}
    return _answer(request, exc.status_code, {"error": codes.get(exc.status_code, "http_error"),
                                              "message": str(exc.detail)}, getattr(exc, "headers", None))


def install(api) -> None:
    """Register the handlers: every exception becomes the JSON error shape."""
    api.add_exception_handler(RequestValidationError, handle_validation_error)
    api.add_exception_handler(HTTPException, handle_http_error)
    for exc in (ValueError, NotFound, Overloaded, EngineDown, DeadlineExceeded, StreamFailed, Exception):
        api.add_exception_handler(exc, handle_error)


def _doc(description: str) -> dict:
    return {"model": ErrorBody, "description": description}


# statuses by route kind, for FastAPI's ``responses=`` (every status a route can answer)
COMMON = {
    401: {**_doc("the server requires an API key and the request has none, or a wrong one"),
          "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}}},
    413: _doc(f"request body over {MAX_BODY_BYTES} bytes"),
    422: _doc("body is not JSON or breaks the schema"),
    500: _doc("server error (e.g. a numerical fault of the model)"),
}
WORK = {
    **COMMON,
    400: _doc("a body that cannot be decoded, or text with symbols the model cannot read (named in "
              "unknown_symbols)"),
    503: {**_doc("at capacity, or the replica's engine is being replaced: retry after the Retry-After "
                 "header's seconds"),
          "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}},
    504: _doc("the request's deadline passed"),
    404: _doc("no such model for this route (the message names the ones served)"),
}
WRITE = {**WORK, 404: _doc("unknown style, or no such model for this route (the message names the ones served)")}


class BodyLimit:
    """Pure ASGI middleware: 413 for request bodies over ``max_bytes`` (declared or streamed)."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def _too_large(self, scope, receive, send):
        body = {"error": "payload_too_large", "message": f"request body exceeds {self.max_bytes} bytes"}
        if openai_route(scope):
            body = openai_payload(413, body)
        await SafeJSONResponse(body, status_code=413)(scope, receive, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    return await self._too_large(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                return await self._too_large(scope, receive, send)
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
