"""HTTP serving of a trained checkpoint with Ray Serve (FastAPI ingress, JSON in and out).

Routes::

    POST /generate   {prompt, length, temperature, top_k, seed, n} -> {"samples": [...], "model": {...}}
    POST /score      {text}   -> {"log_prob", "tokens", "bits_per_token", "perplexity", "model"}
    GET  /healthz    liveness
    GET  /info       checkpoint URL, run name, kind, vocabulary, model config, batching settings
    GET  /stats      this replica's counters: requests, samples, batches and a batch-size histogram

Concurrent ``/generate`` requests are collected by ``@serve.batch`` and answered by ONE
``generate_batch`` call: one forward pass per step for all of them, every sample with its own
generator (a seeded request gives the same text whatever else shares its batch).

Serve forms a batch from the requests that arrive within ``batch_wait_timeout_s`` of its first
one, even while the model is still busy with the previous batch. So the batched method only hands
its requests to a ``Coalescer``, which runs one ``generate_batch`` at a time in a worker thread
and gives each call everything that queued meanwhile (at most ``max_batch_size`` requests): a
busy replica runs full batches rather than one 10 ms slice of traffic per call.

Errors are JSON and never 500 for a bad request: schema violations -> 422 with the failing
fields, unknown symbols in a prompt -> 400 naming them (any ``ValueError`` from the library is a
400), bodies over ``MAX_BODY_BYTES`` -> 413, a route this checkpoint's model kind cannot serve -> 404.

Model kinds: the deployment looks up a handler for ``config.model.kind`` in ``HANDLERS``.
``TextHandler`` serves text models (``/generate``, ``/score``); another kind (handwriting
synthesis) adds a handler class with its own capabilities and a route that calls
``self._handler_for("<capability>")``; the shared parts (loading, errors, limits, stats, batching
plumbing) stay as they are.
"""

import asyncio
import json
import os
import threading
import time
from collections import Counter
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from seqgen.text_sampling import GenerateRequest

# Request limits (a request above them is refused before any work is done).
MAX_LENGTH = 5000  # symbols generated per sample
MAX_SAMPLES = 16  # samples per request (n)
MAX_PROMPT_CHARS = 10_000
MAX_SCORE_CHARS = 20_000
MAX_TOP_K = 1_000_000
MAX_SEED = 2**63 - 1
MAX_WRITE_CHARS = 200  # hard bound; the model's own limit (its max points) is usually lower
MAX_BODY_BYTES = 256 * 1024  # well above the largest valid body (20k chars, JSON-escaped)

Loader = Callable[[str], tuple]  # checkpoint URL -> (model, LoadedCheckpoint)


# --------------------------------------------------------------------------------------------
# Request schemas


class GenerateBody(BaseModel):
    """Body of ``POST /generate``. Strict: ``"200"`` is not a length and ``true`` is not a number."""

    model_config = ConfigDict(strict=True, extra="forbid")

    prompt: str = Field("", max_length=MAX_PROMPT_CHARS, description="text to continue (primes the network)")
    length: int = Field(200, ge=1, le=MAX_LENGTH, description="symbols to generate per sample")
    temperature: float = Field(1.0, ge=0.0, le=10.0, allow_inf_nan=False, description="0 = greedy")
    top_k: int = Field(0, ge=0, le=MAX_TOP_K, description="sample among the k most likely; 0 = all")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="sample i uses seed + i; null = random")
    n: int = Field(1, ge=1, le=MAX_SAMPLES, description="number of samples")


class ScoreBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    text: str = Field(..., min_length=1, max_length=MAX_SCORE_CHARS)


class WriteBody(BaseModel):
    """Body of ``POST /write`` (handwriting synthesis models)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    text: str = Field(..., min_length=1, max_length=MAX_WRITE_CHARS, description="text to write")
    bias: float = Field(0.75, ge=0.0, le=10.0, allow_inf_nan=False, description="probability bias b (eqs. 61-62)")
    style: int | str | None = Field(None, description="priming style: 0-12 (shared styles) or a dataset line id")
    seed: int | None = Field(None, ge=0, le=MAX_SEED)


# --------------------------------------------------------------------------------------------
# Errors


class UnknownSymbols(ValueError):
    """A prompt or text holds symbols outside the model's vocabulary."""

    def __init__(self, symbols: list[str], message: str):
        super().__init__(message)
        self.symbols = symbols


class UnsupportedRoute(Exception):
    """The loaded checkpoint's model kind has no handler for this route."""


class SafeJSONResponse(JSONResponse):
    """ASCII-escaped JSON (a lone surrogate from a request cannot break the encoder); no NaN."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def _error(status: int, error: str, message: str, **extra) -> SafeJSONResponse:
    return SafeJSONResponse({"error": error, "message": message, **extra}, status_code=status)


async def _validation_error(request: Request, exc: RequestValidationError) -> SafeJSONResponse:
    # Only location, message and type: echoing the input back could be huge, NaN (unencodable)
    # or hold objects that are not JSON.
    details = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in exc.errors()
    ]
    summary = "; ".join(f"{'.'.join(d['loc'][1:]) or 'body'}: {d['msg']}" for d in details[:5])
    return _error(422, "invalid_request", summary or "invalid request", detail=details)


async def _value_error(request: Request, exc: ValueError) -> SafeJSONResponse:
    extra = {"unknown_symbols": exc.symbols} if isinstance(exc, UnknownSymbols) else {}
    return _error(400, "bad_request", str(exc), **extra)


async def _unsupported(request: Request, exc: UnsupportedRoute) -> SafeJSONResponse:
    return _error(404, "unsupported_route", str(exc))


async def _internal_error(request: Request, exc: Exception) -> SafeJSONResponse:
    return _error(500, "internal_error", f"{type(exc).__name__}: {exc}")


class BodyLimit:
    """Pure ASGI middleware: 413 for request bodies over ``max_bytes`` (declared or streamed)."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def _too_large(self, scope, receive, send):
        msg = f"request body exceeds {self.max_bytes} bytes"
        await _error(413, "payload_too_large", msg)(scope, receive, send)

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


api = FastAPI(
    title="seqgen",
    description="Recurrent sequence generators (Graves 2013, char-rnn) served with Ray Serve.",
    default_response_class=SafeJSONResponse,
)
api.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
api.add_exception_handler(RequestValidationError, _validation_error)
api.add_exception_handler(ValueError, _value_error)
api.add_exception_handler(UnsupportedRoute, _unsupported)
api.add_exception_handler(Exception, _internal_error)


# --------------------------------------------------------------------------------------------
# Model-kind handlers


class ModelHandler:
    """What one model kind serves. ``capabilities`` names the routes it answers."""

    capabilities: frozenset[str] = frozenset()

    def __init__(self, model, loaded, checkpoint_url: str):
        self.model = model
        self.loaded = loaded
        self.checkpoint_url = checkpoint_url

    @property
    def kind(self) -> str:
        return self.loaded.config.model.kind

    def summary(self) -> dict:
        """Short description of the model, returned with every answer."""
        return {
            "run_name": self.loaded.config.run_name,
            "kind": self.kind,
            "checkpoint": self.checkpoint_url,
            "step": self.loaded.progress.get("step"),
        }

    def info(self) -> dict:
        from seqgen.config import to_dict

        return {
            **self.summary(),
            "dataset": self.loaded.config.dataset,
            "model_config": to_dict(self.loaded.config.model),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "device": str(next(self.model.parameters()).device),
            "routes": sorted(self.capabilities),
        }


class TextHandler(ModelHandler):
    """Text models (char / byte / word / bigram vocabularies): ``/generate`` and ``/score``."""

    capabilities = frozenset({"generate", "score"})

    def __init__(self, model, loaded, checkpoint_url: str):
        super().__init__(model, loaded, checkpoint_url)
        from seqgen.data.tokenizers import Vocabulary

        self.vocab = Vocabulary.from_json(loaded.meta["vocab"])

    def info(self) -> dict:
        return {**super().info(), "vocab_size": len(self.vocab), "vocab_kind": self.vocab.kind}

    def check_text(self, text: str) -> None:
        """Raise ``UnknownSymbols`` (a ValueError, so a 400) naming what the vocabulary lacks."""
        from seqgen.data.tokenizers import split_symbols

        try:
            self.vocab.encode(text)
        except UnicodeError as e:
            raise ValueError(f"text is not valid Unicode: {e}") from None
        except ValueError as e:
            unknown = sorted({str(s) for s in split_symbols(self.vocab.kind, text.encode("utf-8"))
                              if s not in self.vocab.index})
            raise UnknownSymbols(unknown, str(e)) from None

    def prepare_generate(self, body: GenerateBody) -> GenerateRequest:
        self.check_text(body.prompt)  # before batching: a bad prompt must not fail its batch-mates
        return GenerateRequest(body.prompt, body.length, body.temperature, body.top_k, body.seed, body.n)

    def generate_batch(self, requests: list[GenerateRequest]) -> list[list[str]]:
        from seqgen.text_sampling import generate_batch

        return generate_batch(self.model, self.vocab, requests)

    def score(self, body: ScoreBody) -> dict:
        from seqgen.text_sampling import score_text

        self.check_text(body.text)
        return score_text(self.model, self.vocab, body.text)


class HandwritingHandler(ModelHandler):
    """Handwriting synthesis (Graves sec. 5): ``/write`` -> SVG + the strokes as JSON."""

    capabilities = frozenset({"write"})

    def __init__(self, model, loaded, checkpoint_url: str):
        super().__init__(model, loaded, checkpoint_url)
        from seqgen.handwriting.models import meta_alphabet

        self.alphabet = meta_alphabet(loaded.meta)

    def info(self) -> dict:
        return {**super().info(), "alphabet": "".join(self.alphabet.chars[1:])}

    def write(self, body: WriteBody, storage=None) -> dict:
        from seqgen.handwriting.render import strokes_svg
        from seqgen.handwriting.sampling import synthesize
        from seqgen.handwriting.styles import resolve_style

        if self.alphabet.fallback is None and (bad := self.alphabet.unknown_chars(body.text)):
            raise UnknownSymbols(sorted(bad), f"text has characters the model cannot write: {bad}")
        prime = resolve_style(str(body.style), self.loaded.meta, storage) if body.style is not None else None
        result = synthesize(self.model, self.loaded.meta, [body.text], bias=body.bias, seed=body.seed, prime=prime)[0]
        return {"svg": strokes_svg([result.offsets]), "strokes": result.offsets.round(3).tolist(),
                "points": len(result.offsets)}


# model kind -> handler class.
HANDLERS: dict[str, type[ModelHandler]] = {"text": TextHandler, "handwriting_synthesis": HandwritingHandler}


def default_loader(checkpoint_url: str):
    """``load_model`` onto the replica's GPU if Ray gave it one, else the CPU."""
    import torch

    from seqgen.models import load_model

    return load_model(checkpoint_url, device="cuda" if torch.cuda.is_available() else "cpu")


class Stats:
    """Per-replica counters (thread-safe; generation runs in a worker thread)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.started = time.time()
        self.requests: Counter = Counter()
        self.samples = 0
        self.symbols = 0
        self.batches = 0
        self.batch_sizes: Counter = Counter()  # requests per generate_batch call -> count
        self.busy_s = 0.0

    def request(self, route: str) -> None:
        with self._lock:
            self.requests[route] += 1

    def batch(self, requests: list[GenerateRequest], seconds: float) -> None:
        with self._lock:
            self.batches += 1
            self.batch_sizes[len(requests)] += 1
            self.samples += sum(r.n for r in requests)
            self.symbols += sum(r.n * r.length for r in requests)
            self.busy_s += seconds

    def as_dict(self) -> dict:
        with self._lock:
            return {
                "uptime_s": time.time() - self.started,
                "requests": dict(self.requests),
                "samples": self.samples,
                "symbols_generated": self.symbols,
                "batches": self.batches,
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                "max_batch_size_seen": max(self.batch_sizes, default=0),
                "generate_busy_s": self.busy_s,
                "replica": _replica_id(),
            }


class Coalescer:
    """Runs ``fn(requests)`` in a worker thread, one call at a time, merging what queued meanwhile.

    ``enqueue`` returns one future per request at once (so the ``@serve.batch`` call that hands
    them over finishes immediately and Serve can form its next batch). While a generation runs,
    later requests wait here; the next call takes up to ``max_requests`` of them in arrival order.
    A request whose caller went away (cancelled future) is dropped before it costs anything; an
    exception fails every request of that call.
    """

    def __init__(self, fn: Callable[[list], list], max_requests: int):
        self.fn = fn
        self.max_requests = max_requests
        self.pending: list[tuple[Any, asyncio.Future]] = []
        self.running = False

    def enqueue(self, requests: list) -> list[asyncio.Future]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in requests]
        self.pending.extend(zip(requests, futures))
        if not self.running:
            self.running = True
            loop.create_task(self._drain())
        return futures

    async def _drain(self) -> None:
        try:
            while self.pending:
                self.pending = [(r, f) for r, f in self.pending if not f.done()]
                taken, self.pending = self.pending[: self.max_requests], self.pending[self.max_requests :]
                if not taken:
                    continue
                try:
                    results = await asyncio.to_thread(self.fn, [r for r, _ in taken])
                except Exception as e:  # noqa: BLE001 - handed to every caller of this call
                    for _, future in taken:
                        if not future.done():
                            future.set_exception(e)
                    continue
                for (_, future), result in zip(taken, results):
                    if not future.done():
                        future.set_result(result)
        finally:
            self.running = False


def _replica_id() -> str | None:
    try:
        return serve.get_replica_context().replica_tag
    except Exception:  # outside a replica, or the context has no tag
        return None


# --------------------------------------------------------------------------------------------
# The deployment


@serve.deployment(name="SeqgenServer")
@serve.ingress(api)
class SeqgenServer:
    def __init__(self, checkpoint_url: str, max_batch_size: int = 32, batch_wait_timeout_s: float = 0.01,
                 loader: Loader | None = None):
        model, loaded = (loader or default_loader)(checkpoint_url)
        kind = loaded.config.model.kind
        if kind not in HANDLERS:
            raise ValueError(f"no serving handler for model kind {kind!r} (served kinds: {', '.join(HANDLERS)})")
        self.handler = HANDLERS[kind](model, loaded, checkpoint_url)
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self._generate_batched.set_max_batch_size(max_batch_size)
        self._generate_batched.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.stats = Stats()
        self.coalescer = Coalescer(self._run_generate, max_batch_size)

    def _handler_for(self, capability: str):
        if capability not in self.handler.capabilities:
            raise UnsupportedRoute(
                f"this checkpoint holds a {self.handler.kind!r} model, which does not serve /{capability} "
                f"(it serves: {', '.join('/' + c for c in sorted(self.handler.capabilities))})"
            )
        return self.handler

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/info")
    async def info(self) -> dict:
        import torch

        return {
            **self.handler.info(),
            "batching": {"max_batch_size": self.max_batch_size, "batch_wait_timeout_s": self.batch_wait_timeout_s},
            "limits": {"length": MAX_LENGTH, "n": MAX_SAMPLES, "prompt_chars": MAX_PROMPT_CHARS,
                       "score_chars": MAX_SCORE_CHARS, "body_bytes": MAX_BODY_BYTES},
            "torch_threads": torch.get_num_threads(),
        }

    @api.get("/stats")
    async def get_stats(self) -> dict:
        return self.stats.as_dict()

    @api.post("/generate")
    async def generate(self, body: GenerateBody) -> dict:
        handler = self._handler_for("generate")
        self.stats.request("generate")
        request = handler.prepare_generate(body)
        samples = await (await self._generate_batched(request))
        return {"samples": samples, "model": handler.summary()}

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)  # sizes reset per deployment in __init__
    async def _generate_batched(self, requests: list[GenerateRequest]) -> list[asyncio.Future]:
        # Hands the batch to the coalescer and returns at once: one future per request.
        return self.coalescer.enqueue(requests)

    def _run_generate(self, requests: list[GenerateRequest]) -> list[list[str]]:
        # In a worker thread, so the replica's event loop keeps accepting (and queueing) requests
        # for the next batch while this one runs.
        t0 = time.perf_counter()
        texts = self.handler.generate_batch(requests)
        self.stats.batch(requests, time.perf_counter() - t0)
        return texts

    @api.post("/score")
    async def score(self, body: ScoreBody) -> dict:
        handler = self._handler_for("score")
        self.stats.request("score")
        result = await asyncio.to_thread(handler.score, body)
        return {**result, "model": handler.summary()}


    @api.post("/write")
    async def write(self, body: WriteBody) -> dict:
        handler = self._handler_for("write")
        self.stats.request("write")
        result = await asyncio.to_thread(handler.write, body)
        return {**result, "model": handler.summary()}


# --------------------------------------------------------------------------------------------
# Building and running


def build_app(checkpoint_url: str, *, max_batch_size: int = 32, batch_wait_timeout_s: float = 0.01,
              num_replicas: int = 1, num_cpus: float = 0.5, num_gpus: float = 0,
              max_ongoing_requests: int | None = None, loader: Loader | None = None):
    """The Serve application for one checkpoint.

    ``max_ongoing_requests`` (per replica) defaults to two full batches, so a full batch can
    queue while one runs; ``loader`` (checkpoint URL -> (model, LoadedCheckpoint)) defaults to
    ``load_model`` and runs inside each replica, so it must be picklable.
    """
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    ongoing = max_ongoing_requests or max(2 * max_batch_size, 8)
    actor_options: dict = {"num_cpus": num_cpus}
    if num_gpus:
        actor_options["num_gpus"] = num_gpus
    return SeqgenServer.options(
        num_replicas=num_replicas,
        max_ongoing_requests=ongoing,
        ray_actor_options=actor_options,
    ).bind(checkpoint_url, max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s, loader=loader)


def app_builder(args: dict):
    """Serve application builder for config files that need only the installed package:
    ``import_path: seqgen.serve.app:app_builder`` with ``args:`` {checkpoint, storage,
    max_batch_size, batch_wait_timeout_s, num_replicas, num_cpus, num_gpus, max_ongoing_requests}.

    ``checkpoint`` (else ``$SEQGEN_CHECKPOINT``) is a checkpoint directory, a run directory (its
    best checkpoint) or a run name under ``storage`` (else ``$SEQGEN_STORAGE``)."""
    from seqgen.storage import Storage
    from seqgen.checkpoint import resolve

    args = dict(args)
    ref = args.pop("checkpoint", None) or os.environ.get("SEQGEN_CHECKPOINT")
    storage = args.pop("storage", None)
    if not ref:
        raise ValueError("no checkpoint: pass args.checkpoint or set SEQGEN_CHECKPOINT")
    checkpoint = resolve(Storage.from_url(storage), str(ref))
    casts = {"max_batch_size": int, "batch_wait_timeout_s": float, "num_replicas": int,
             "num_cpus": float, "num_gpus": float, "max_ongoing_requests": int}
    unknown = sorted(set(args) - set(casts))
    if unknown:
        raise ValueError(f"unknown serve argument(s) {unknown} (valid: checkpoint, storage, {', '.join(casts)})")
    return build_app(checkpoint, **{k: casts[k](v) for k, v in args.items()})


def run(checkpoint_url: str, host: str = "127.0.0.1", port: int = 8000, blocking: bool = True,
        name: str = "seqgen", route_prefix: str = "/", **kw) -> str:
    """Start Serve (HTTP on ``host:port``, loopback by default) with this checkpoint's app.

    Returns the base URL; with ``blocking`` waits until Ctrl-C, then shuts Serve down.
    ``kw`` goes to ``build_app``.
    """
    from seqgen.runtime import ensure_ray

    ensure_ray()
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(checkpoint_url, **kw), name=name, route_prefix=route_prefix, blocking=False)
    url = f"http://{host}:{port}{route_prefix.rstrip('/')}"
    if blocking:
        print(f"serving {checkpoint_url} at {url} (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
        finally:
            serve.shutdown()
    return url
