"""The Ray Serve deployment: HTTP routes over one continuous-batching engine per replica.

Routes (those the checkpoint's model kind cannot serve are absent from its OpenAPI document and
answer 404)::

    GET  /            a page: type text -> handwriting drawn as it streams; prompt -> streamed text
    POST /generate    {prompt, length, temperature, top_k, seed, n, stream, timeout_s}   text models
    POST /score       {text, timeout_s} -> log-probability, bits per token, perplexity    text models
    POST /write       {text, bias, style, seed, stream, timeout_s} -> SVG + strokes       handwriting
    GET  /healthz     liveness; answered on the event loop, never behind generation
    GET  /info        checkpoint, model, limits
    GET  /stats       this replica's engine counters (also exported as Ray Serve metrics)
    GET  /openapi.json

Every request goes through the replica's `Engine` (`seqgen.serve.engine`), which runs in a child
process of the replica (`seqgen.serve.engine_process`; ``engine="thread"`` keeps it in the replica):
a request joins the running batch at the next step, a full queue answers 503 at once, a deadline
504. Errors have one JSON shape (`seqgen.serve.errors`).
"""

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Callable

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, StreamingResponse
from ray import serve

from seqgen import kinds
from seqgen.serve import errors
from seqgen.serve.engine import Engine, EngineDown
from seqgen.serve.engine_process import EngineProcess
from seqgen.serve.errors import WORK, WRITE, BodyLimit, SafeJSONResponse, error_payload
from seqgen.serve.handlers import TextStream
from seqgen.serve.schemas import (
    MAX_BODY_BYTES, MAX_LENGTH, MAX_PROMPT_CHARS, MAX_SAMPLES, MAX_SCORE_CHARS, MAX_TIMEOUT_S, GenerateBody,
    GenerateResponse, Health, ScoreBody, ScoreResponse, WriteBody, WriteResponse,
)
from seqgen.rng import random_seed
from seqgen.text_sampling import score_summary

Loader = Callable[[str], tuple]  # checkpoint URL -> (model, LoadedCheckpoint)
PAGE = Path(__file__).parent / "static" / "index.html"
ROUTE_CAPABILITY = {"/generate": "generate", "/score": "score", "/write": "write"}
HEADROOM = 8  # ongoing requests beyond the engine's capacity: /healthz, /info, requests being refused
#: where a replica runs its engine: a child process (the default: the GIL stays with HTTP) or a thread
ENGINES = {"process": EngineProcess, "thread": Engine}

api = FastAPI(
    title="seqgen",
    description="Recurrent sequence generators (Graves 2013, char-rnn) served with Ray Serve, "
                "with iteration-level batching of generation.",
    default_response_class=SafeJSONResponse,
)
api.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
errors.install(api)

SSE = {200: {"content": {"text/event-stream": {"schema": {
    "type": "object", "required": ["event", "data"],
    "properties": {"event": {"type": "string", "enum": ["start", "chunk", "done", "error"]},
                   "data": {"type": "string", "description": "JSON: start {seed, samples, model}; chunk {sample, "
                                                             "text}; done {samples, symbols, seed, elapsed_s}; error "
                                                             "{error, message}"}}}}},
             "description": "JSON, or with stream=true a text/event-stream"}}
NDJSON = {200: {"content": {"application/x-ndjson": {"schema": {
    "type": "object", "description": "each line: {points: [[dx, dy, eos], ...]}, then {done: true, points, seed, "
                                     "elapsed_s, model}; or {error, message}"}}},
                "description": "JSON, or with stream=true newline-delimited JSON"}}


def default_loader(checkpoint_url: str):
    """``load_model`` onto the replica's GPU if Ray gave it one, else the CPU."""
    import torch

    from seqgen.models import load_model

    return load_model(checkpoint_url, device="cuda" if torch.cuda.is_available() else "cpu")


def _replica_id() -> str | None:
    try:
        return serve.get_replica_context().replica_tag
    except Exception:  # outside a replica, or the context has no tag
        return None


class MetricsExporter:
    """Publishes the engine's statistics as Ray Serve metrics (Prometheus, via Ray's metrics agent)
    once a second: batch occupancy, running rows, queue length, symbols/s and request outcomes."""

    def __init__(self, engine: Engine | EngineProcess, period_s: float = 1.0):
        from ray.serve import metrics

        self.engine = engine
        self.period_s = period_s
        self.gauges = {
            "occupancy": metrics.Gauge("seqgen_batch_occupancy", description="rows in the running batch / max streams"),
            "running_rows": metrics.Gauge("seqgen_running_rows", description="rows in the running batch"),
            "queue_length": metrics.Gauge("seqgen_queue_length", description="requests waiting for a slot"),
            "symbols_per_s": metrics.Gauge("seqgen_symbols_per_second", description="symbols drawn per second"),
        }
        self.requests = metrics.Counter("seqgen_requests", description="requests by outcome", tag_keys=("outcome",))
        self.symbols = metrics.Counter("seqgen_symbols", description="symbols and pen points drawn")
        self._seen: dict = {}
        self._seen_symbols = 0
        threading.Thread(target=self._run, name="seqgen-metrics", daemon=True).start()

    def export(self) -> None:
        s = self.engine.snapshot()
        self.gauges["occupancy"].set(s["running_rows"] / self.engine.max_streams)
        self.gauges["running_rows"].set(s["running_rows"])
        self.gauges["queue_length"].set(s["queue_length"])
        self.gauges["symbols_per_s"].set(s["symbols_per_s"])
        for outcome, count in s["requests"].items():
            if count > self._seen.get(outcome, 0):
                self.requests.inc(count - self._seen.get(outcome, 0), tags={"outcome": outcome})
                self._seen[outcome] = count
        if s["symbols_generated"] > self._seen_symbols:
            self.symbols.inc(s["symbols_generated"] - self._seen_symbols)
            self._seen_symbols = s["symbols_generated"]

    def _run(self) -> None:
        while True:
            time.sleep(self.period_s)
            try:
                self.export()
            except Exception:  # noqa: BLE001 - metrics must never take the replica down
                pass


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=True, separators=(',', ':'))}\n\n"


def _ndjson(data: dict) -> str:
    return json.dumps(data, ensure_ascii=True, separators=(",", ":")) + "\n"


@serve.deployment(name="SeqgenServer")
@serve.ingress(api)
class SeqgenServer:
    def __init__(self, checkpoint_url: str, max_streams: int = 64, max_queued: int = 64, timeout_s: float = 60.0,
                 prefill_chunk: int = 64, flush_interval_s: float = 0.05, max_chunks_per_s: float = 200.0,
                 storage: str | None = None, loader: Loader | None = None, batching: str = "continuous",
                 engine: str = "process"):
        from seqgen.storage import Storage

        model, loaded = (loader or default_loader)(checkpoint_url)
        kind = kinds.get(loaded.config.model.kind)
        if kind.handler is None:
            served = ", ".join(k.name for k in kinds.KINDS.values() if k.handler)
            raise ValueError(f"model kind {kind.name!r} is not served (served kinds: {served})")
        handler = kinds.resolve(kind.handler)
        self.handler = handler(model, loaded, checkpoint_url, Storage.from_url(storage) if storage else None)
        self.timeout_s = min(timeout_s, MAX_TIMEOUT_S)
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        self.settings = {"engine": engine, "max_streams": max_streams, "max_queued": max_queued,
                         "prefill_chunk": prefill_chunk, "flush_interval_s": flush_interval_s,
                         "max_chunks_per_s": max_chunks_per_s, "batching": batching}
        self.engine = ENGINES[engine](self.handler.gen, max_streams=max_streams, max_queued=max_queued,
                                      prefill_chunk=prefill_chunk, flush_interval_s=flush_interval_s,
                                      max_chunks_per_s=max_chunks_per_s, batching=batching)
        self.metrics = MetricsExporter(self.engine)
        api.openapi_schema = None  # built for this model on first use
        api.openapi = self._openapi

    def _openapi(self) -> dict:
        """The OpenAPI document of THIS model: only its routes, with what it can read stated."""
        if api.openapi_schema is None:
            schema = get_openapi(title=api.title, version="1", description=api.description, routes=api.routes)
            schema["paths"] = {path: ops for path, ops in schema["paths"].items()
                               if ROUTE_CAPABILITY.get(path, "") in self.handler.capabilities | {""}}
            self.handler.openapi_limits(schema.get("components", {}).get("schemas", {}))
            api.openapi_schema = schema
        return api.openapi_schema

    def _handler_for(self, capability: str):
        if capability not in self.handler.capabilities:
            raise errors.NotFound(
                f"this checkpoint holds a {self.handler.kind!r} model, which does not serve /{capability} "
                f"(it serves: {', '.join('/' + c for c in sorted(self.handler.capabilities))})"
            )
        return self.handler

    def _timeout(self, requested: float | None) -> float:
        return min(requested or self.timeout_s, MAX_TIMEOUT_S)

    @api.get("/", response_class=HTMLResponse, responses={200: {"description": "the web page"}})
    async def page(self) -> HTMLResponse:
        return HTMLResponse(PAGE.read_text())

    @api.get("/healthz", response_model=Health, responses={503: errors.WORK[503]})
    async def healthz(self) -> dict:
        self.check_health()
        return {"status": "ok"}

    @api.get("/info")
    async def info(self) -> dict:
        import torch

        return {**self.handler.info(),
                "engine": {**self.settings, "default_timeout_s": self.timeout_s},
                "limits": {"length": MAX_LENGTH, "n": MAX_SAMPLES, "prompt_chars": MAX_PROMPT_CHARS,
                           "score_chars": MAX_SCORE_CHARS, "body_bytes": MAX_BODY_BYTES, "timeout_s": MAX_TIMEOUT_S},
                "torch_threads": torch.get_num_threads()}

    @api.get("/stats")
    async def stats(self) -> dict:
        return {**await asyncio.to_thread(self.engine.snapshot), "replica": _replica_id()}

    def __del__(self):  # Serve calls it when the replica shuts down
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.stop()

    def check_health(self) -> None:
        """Serve's periodic health check (and /healthz): a replica whose engine process died is
        replaced by Serve."""
        if isinstance(self.engine, EngineProcess) and not self.engine.alive():
            raise EngineDown(f"the engine is down ({self.engine.exit_reason}); the replica is being replaced")

    # ------------------------------------------------------------------------------ /generate
    @api.post("/generate", response_model=GenerateResponse, responses={**WORK, **SSE})
    async def generate(self, body: GenerateBody):
        handler = self._handler_for("generate")
        seed = random_seed() if body.seed is None else body.seed
        ticket = self.engine.submit(handler.generate_job(body, seed), self._timeout(body.timeout_s))
        stream = TextStream(handler, body.n)
        if body.stream:
            return StreamingResponse(self._generate_events(ticket, stream, seed), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        async for kind, payload in self.engine.events(ticket):
            if kind == "chunk":
                stream.add(payload)
        return {"samples": stream.texts(), "seed": seed, "model": handler.summary()}

    async def _generate_events(self, ticket, stream: TextStream, seed: int):
        t0, symbols = time.monotonic(), 0
        yield _sse("start", {"seed": seed, "samples": len(stream.ids), "model": self.handler.summary()})
        try:
            async for kind, payload in self.engine.events(ticket):
                if kind == "chunk":
                    symbols += sum(len(v) for v in payload.values())
                    for i, text in stream.add(payload).items():
                        yield _sse("chunk", {"sample": i, "text": text})
                else:
                    for i, text in stream.finish().items():
                        yield _sse("chunk", {"sample": i, "text": text})
                    yield _sse("done", {"samples": len(stream.ids), "symbols": symbols, "seed": seed,
                                        "elapsed_s": round(time.monotonic() - t0, 4)})
        except Exception as e:  # noqa: BLE001 - the status line is gone: report in the stream
            yield _sse("error", error_payload(e)[1])

    # ------------------------------------------------------------------------------ /score
    @api.post("/score", response_model=ScoreResponse, responses=WORK)
    async def score(self, body: ScoreBody) -> dict:
        handler = self._handler_for("score")
        ticket = self.engine.submit(handler.score_job(body), self._timeout(body.timeout_s))
        async for kind, payload in self.engine.events(ticket):
            if kind == "done":
                return {**score_summary(payload["log_prob"], payload["tokens"]), "model": handler.summary()}
        raise RuntimeError("scoring ended without a result")

    # ------------------------------------------------------------------------------ /write
    @api.post("/write", response_model=WriteResponse, responses={**WRITE, **NDJSON})
    async def write(self, body: WriteBody):
        handler = self._handler_for("write")
        seed = random_seed() if body.seed is None else body.seed
        ticket = self.engine.submit(handler.write_job(body, seed), self._timeout(body.timeout_s))
        if body.stream:
            return StreamingResponse(self._write_events(ticket, seed), media_type="application/x-ndjson",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        outputs: list = []
        async for kind, payload in self.engine.events(ticket):
            if kind == "chunk":
                outputs += payload.get(0, [])
        offsets = handler.points(outputs)
        return {"svg": handler.svg(offsets), "strokes": offsets.round(3).tolist(), "points": len(offsets),
                "seed": seed, "model": handler.summary()}

    async def _write_events(self, ticket, seed: int):
        t0, points = time.monotonic(), 0
        try:
            async for kind, payload in self.engine.events(ticket):
                if kind == "chunk":
                    new = self.handler.points(payload.get(0, []))
                    points += len(new)
                    yield _ndjson({"points": new.round(3).tolist()})
                else:
                    yield _ndjson({"done": True, "points": points, "seed": seed,
                                   "elapsed_s": round(time.monotonic() - t0, 4), "model": self.handler.summary()})
        except Exception as e:  # noqa: BLE001 - the status line is gone: report in the stream
            yield _ndjson(error_payload(e)[1])


# --------------------------------------------------------------------------------------------
# Building and running


def deployment_options(*, max_streams: int = 64, max_queued: int = 64, num_replicas: int = 1,
                       autoscale: tuple[int, int] | dict | None = None, target_ongoing_requests: float | None = None,
                       num_cpus: float = 0.5, num_gpus: float = 0, max_ongoing_requests: int | None = None,
                       health_check_period_s: float = 5.0) -> dict:
    """Serve options of the deployment, its limits following the engine's.

    A replica takes at most ``max_streams + max_queued`` requests plus a little headroom (so
    /healthz is never turned away); Serve's router holds at most as many more in transit (a burst
    can put a whole replica's worth there at once) before answering 503 itself; the engine refuses
    beyond its own limits first, with the JSON 503. ``autoscale=(min, max)`` replaces
    ``num_replicas`` with Serve autoscaling towards ``target_ongoing_requests`` per replica
    (default: half the streams); a dict is a whole Serve ``autoscaling_config`` (delays etc.).
    """
    if max_streams < 1 or max_queued < 0:
        raise ValueError(f"max_streams must be >= 1 and max_queued >= 0, got {max_streams}, {max_queued}")
    ongoing = max_ongoing_requests or max_streams + max_queued + HEADROOM
    options: dict = {
        "max_ongoing_requests": ongoing,
        "max_queued_requests": ongoing,
        "ray_actor_options": {"num_cpus": num_cpus, **({"num_gpus": num_gpus} if num_gpus else {})},
        "health_check_period_s": health_check_period_s,  # a replica whose engine died is replaced this soon
    }
    if autoscale:
        config = dict(autoscale) if isinstance(autoscale, dict) else dict(zip(("min_replicas", "max_replicas"), autoscale))
        low, high = config.get("min_replicas", 1), config.get("max_replicas", 1)
        if not 0 <= low <= high or high < 1:
            raise ValueError(f"autoscale needs 0 <= MIN <= MAX and MAX >= 1, got {low}:{high}")
        config.setdefault("initial_replicas", max(low, 1))
        config.setdefault("target_ongoing_requests", target_ongoing_requests or max(1, max_streams // 2))
        options["autoscaling_config"] = config
    else:
        options["num_replicas"] = num_replicas
    return options


def build_app(checkpoint_url: str, *, max_streams: int = 64, max_queued: int = 64, timeout_s: float = 60.0,
              prefill_chunk: int = 64, flush_interval_s: float = 0.05, max_chunks_per_s: float = 200.0,
              storage: str | None = None, loader: Loader | None = None, batching: str = "continuous",
              engine: str = "process", **scaling):
    """The Serve application for one checkpoint; ``scaling`` goes to `deployment_options`.

    ``loader`` (checkpoint URL -> (model, LoadedCheckpoint)) defaults to ``load_model`` and runs
    inside each replica, so it must be picklable.
    """
    options = deployment_options(max_streams=max_streams, max_queued=max_queued, **scaling)
    return SeqgenServer.options(**options).bind(
        checkpoint_url, max_streams=max_streams, max_queued=max_queued, timeout_s=timeout_s,
        prefill_chunk=prefill_chunk, flush_interval_s=flush_interval_s, max_chunks_per_s=max_chunks_per_s,
        storage=storage, loader=loader, batching=batching, engine=engine)


BUILDER_ARGS = {"max_streams": int, "max_queued": int, "timeout_s": float, "prefill_chunk": int, "flush_interval_s": float,
                "max_chunks_per_s": float, "engine": str,
                "num_replicas": int, "num_cpus": float, "num_gpus": float, "max_ongoing_requests": int,
                "target_ongoing_requests": float, "health_check_period_s": float}


def app_builder(args: dict):
    """Serve application builder for config files that need only the installed package:
    ``import_path: seqgen.serve.app:app_builder`` with ``args:`` {checkpoint, storage, autoscale
    ("MIN:MAX"), and any of ``BUILDER_ARGS``}.

    ``checkpoint`` (else ``$SEQGEN_CHECKPOINT``) is a checkpoint directory, a run directory (its
    best checkpoint) or a run name under ``storage`` (else ``$SEQGEN_STORAGE``)."""
    from seqgen.checkpoint import resolve
    from seqgen.storage import Storage

    args = dict(args)
    ref = args.pop("checkpoint", None) or os.environ.get("SEQGEN_CHECKPOINT")
    storage = args.pop("storage", None) or os.environ.get("SEQGEN_STORAGE")
    autoscale = args.pop("autoscale", None)
    if not ref:
        raise ValueError("no checkpoint: pass args.checkpoint or set SEQGEN_CHECKPOINT")
    unknown = sorted(set(args) - set(BUILDER_ARGS))
    if unknown:
        raise ValueError(f"unknown serve argument(s) {unknown} (valid: checkpoint, storage, autoscale, "
                         f"{', '.join(BUILDER_ARGS)})")
    st = Storage.from_url(storage)
    return build_app(resolve(st, str(ref)), storage=st.url, autoscale=parse_autoscale(autoscale),
                     **{k: BUILDER_ARGS[k](v) for k, v in args.items()})


def parse_autoscale(text: str | None) -> tuple[int, int] | None:
    """``"MIN:MAX"`` -> (MIN, MAX); None stays None."""
    if text is None or text == "":
        return None
    try:
        low, high = (int(p) for p in str(text).split(":"))
    except ValueError:
        raise ValueError(f"autoscale must be MIN:MAX (two integers), got {text!r}") from None
    return low, high


def run(checkpoint_url: str, host: str = "127.0.0.1", port: int = 8000, blocking: bool = True,
        name: str = "seqgen", route_prefix: str = "/", **kw) -> str:
    """Start Serve (HTTP on ``host:port``, loopback by default) with this checkpoint's app.

    Returns the base URL; with ``blocking`` waits until Ctrl-C, then shuts Serve down.
    ``kw`` goes to ``build_app``. What listens on ``host:port`` (Serve's proxy or HAProxy) was
    chosen before Ray started (``seqgen.serve.ingress``).
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
