"""The Ray Serve deployment: HTTP routes over the served models, one continuous-batching engine
per model in every replica.

A replica serves one or several checkpoints (text and handwriting models side by side, or several
text models). A request picks one with ``model`` (its run name, OpenAI's field; default: the first
served model that has the route); an unknown name is a 404 naming the served ones. Why one
deployment holding every model rather than a deployment per model behind an ingress, or
``serve.multiplexed``: docs/serving.md, "Several models behind one URL".

Routes (those no served model can answer are absent from the OpenAPI document and answer 404)::

    GET  /            a page: type text -> handwriting drawn as it streams; prompt -> streamed text
    POST /generate    {prompt, length|max_tokens, temperature, top_k, top_p, stop, seed, n, stream,
                       timeout_s}                                                       text models
    POST /score       {text, timeout_s} -> log-probability, bits per token, perplexity    text models
    POST /write       {text, wrap, unknown, bias, style | prime, seed, stream, best_of, timeout_s}
                      -> an SVG page + every line's strokes                            handwriting
    GET  /healthz     liveness; answered on the event loop, never behind generation
    GET  /info        the models (the first one's fields at the top level too), engine, limits
    GET  /stats       this replica's engine counters per model (also exported as Ray Serve metrics)
    POST /v1/completions, GET /v1/models    OpenAI's completions API (`seqgen.serve.openai_api`)  text models
    GET  /openapi.json

Every request goes through its model's engine (`seqgen.serve.engine`), which runs in a child
process of the replica (`seqgen.serve.engine_process`): a request joins the running batch at the
next step, a full queue answers 503 at once, a deadline 504. Errors have one JSON shape
(`seqgen.serve.errors`). The application is built by `seqgen.serve.app`.
"""

import asyncio
import copy
import json
import time
from pathlib import Path
from typing import Callable

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, StreamingResponse
from ray import serve

from seqgen import kinds
from seqgen.rng import random_seed
from seqgen.sampling import Generator
from seqgen.serve import errors, openai_api
from seqgen.serve.access import GateSettings, RecordingEngine, RequestGate, current_request_id, note_model
from seqgen.serve.api_keys import ApiKeys
from seqgen.serve.config import MAX_TIMEOUT_S, EngineConfig, ServeConfig
from seqgen.serve.engine import Engine, EngineDown
from seqgen.serve.engine_process import EngineProcess
from seqgen.serve.errors import WORK, WRITE, BodyLimit, SafeJSONResponse, error_payload
from seqgen.serve.handlers import TextStream, finish_reasons
from seqgen.serve.metrics import MetricsExporter, RequestMetrics
from seqgen.serve.schemas import (
    MAX_BODY_BYTES, MAX_PAGE_ROWS, MAX_PROMPT_CHARS, MAX_SAMPLES, MAX_SCORE_CHARS, GenerateBody,
    GenerateResponse, Health, ScoreBody, ScoreResponse, WriteBody, WriteResponse,
)
from seqgen.text_sampling import score_summary

Loader = Callable[[str], tuple]  # checkpoint URL -> (model, LoadedCheckpoint)
#: (generator, engine settings) -> the replica's engine (anything with Engine's caller side:
#: submit, events, snapshot, alive, stop, config); EngineProcess unless told otherwise
EngineFactory = Callable[[Generator, EngineConfig], "Engine | EngineProcess"]
PAGE = Path(__file__).parent / "static" / "index.html"
ROUTE_CAPABILITY = {"/generate": "generate", "/score": "score", "/write": "write", "/v1/completions": "generate"}

api = FastAPI(
    title="seqgen",
    description="Recurrent sequence generators (Graves 2013, char-rnn) served with Ray Serve, "
                "with iteration-level batching of generation.",
    default_response_class=SafeJSONResponse,
)
api.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
GATE = GateSettings()  # the replica's keys and metrics, set when it starts
api.add_middleware(RequestGate, settings=GATE)  # outermost: ids, keys, access log, latency metrics
errors.install(api)

SSE = {200: {"content": {"text/event-stream": {"schema": {
    "type": "object", "required": ["event", "data"],
    "properties": {"event": {"type": "string", "enum": ["start", "chunk", "done", "error"]},
                   "data": {"type": "string", "description": "JSON: start {seed, samples, model}; chunk {sample, "
                                                             "text}; done {samples, symbols, seed, finish_reasons, "
                                                             "elapsed_s}; error "
                                                             "{error, message}"}}}}},
             "description": "JSON, or with stream=true a text/event-stream"}}
NDJSON = {200: {"content": {"application/x-ndjson": {"schema": {
    "type": "object", "description": "each line: {points: [[dx, dy, eos], ...]}, then {done: true, points, seed, "
                                     "elapsed_s, model}; or {error, message}"}}},
                "description": "JSON, or with stream=true newline-delimited JSON"}}


def default_loader(checkpoint_url: str):
    """``load_model`` onto the replica's GPU if Ray gave it one, else the CPU."""
    import torch

    from seqgen.catalog import load_model

    return load_model(checkpoint_url, device="cuda" if torch.cuda.is_available() else "cpu")


def _handler(model, loaded, checkpoint_url: str, storage):
    """The handler of a loaded checkpoint's model kind (`seqgen.serve.handlers`)."""
    kind = kinds.get(loaded.config.model.kind)
    if kind.handler is None:
        served = ", ".join(k.name for k in kinds.KINDS.values() if k.handler)
        raise ValueError(f"model kind {kind.name!r} is not served (served kinds: {served})")
    return kinds.resolve(kind.handler)(model, loaded, checkpoint_url, storage)


def _listing(handlers) -> str:
    """The served models as ``name (kind: its routes)``, for error messages."""
    return ", ".join(f"{h.name} ({h.kind}: {', '.join('/' + c for c in sorted(h.capabilities))})" for h in handlers)


def _replica_id() -> str | None:
    try:
        return serve.get_replica_context().replica_tag
    except Exception:  # outside a replica, or the context has no tag
        return None


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=True, separators=(',', ':'))}\n\n"


def _ndjson(data: dict) -> str:
    return json.dumps(data, ensure_ascii=True, separators=(",", ":")) + "\n"


@serve.deployment(name="SeqgenServer")
@serve.ingress(api)
class SeqgenServer:
    def __init__(self, checkpoint_urls: str | list[str], config: ServeConfig = ServeConfig(),
                 storage: str | None = None, loader: Loader | None = None, make_engine: EngineFactory | None = None,
                 api_keys: ApiKeys = ApiKeys()):
        from seqgen.storage import Storage

        urls = [checkpoint_urls] if isinstance(checkpoint_urls, str) else list(checkpoint_urls)
        st = Storage.from_url(storage) if storage else None
        handlers = [_handler(*(loader or default_loader)(url), url, st) for url in urls]
        names = [h.name for h in handlers]
        if not handlers or len(set(names)) < len(names):
            raise ValueError(f"the served models need distinct run names (got {names})")
        self.handlers = {h.name: h for h in handlers}  # in the order given: the first of a kind is its default
        self.config = config
        # one engine per model: their batches cannot mix (different networks, different inputs);
        # the recording engine carries request ids into the engine and its timings into the access log
        self.engines = {h.name: RecordingEngine((make_engine or EngineProcess)(h.gen, config.engine))
                        for h in handlers}
        self.metrics = MetricsExporter(self.engines)
        GATE.keys, GATE.observe = api_keys, RequestMetrics().observe
        self.started = int(time.time())
        api.openapi_schema = None  # built for these models on first use
        api.openapi = self._openapi

    def _openapi(self) -> dict:
        """The OpenAPI document of THESE models: only their routes, with what they can read stated."""
        if api.openapi_schema is None:
            schema = get_openapi(title=api.title, version="1", description=api.description, routes=api.routes)
            served = set().union(*(h.capabilities for h in self.handlers.values()))
            schema["paths"] = {path: ops for path, ops in schema["paths"].items()
                               if ROUTE_CAPABILITY.get(path, "") in served | {""}}
            components = schema.get("components", {}).get("schemas", {})
            # one document for every model: what the models of a kind can read (a prompt's characters,
            # a text's length) is stated only when they all read the same, else a request that one
            # model's limit forbids may still be valid for another
            for kind in {type(h) for h in self.handlers.values()}:
                stated = []
                for handler in (h for h in self.handlers.values() if type(h) is kind):
                    stated.append(copy.deepcopy(components))
                    handler.openapi_limits(stated[-1])
                if all(limits == stated[0] for limits in stated):
                    components.update(stated[0])
            for body, capability in (("GenerateBody", "generate"), ("ScoreBody", "score"), ("WriteBody", "write"),
                                     ("CompletionBody", "generate")):
                prop = components.get(body, {}).get("properties", {}).get("model")
                if prop is not None:  # the names this route answers (any other is a 404 naming them)
                    names = [h.name for h in self.handlers.values() if capability in h.capabilities]
                    for text in (m for m in prop.get("anyOf", [prop]) if m.get("type") == "string"):
                        text["enum"] = names
            for body, fields in (("GenerateBody", ("length", "max_tokens")), ("CompletionBody", ("max_tokens",))):
                for field in fields:  # this deployment's max_length, in the field or its union's integer member
                    prop = components.get(body, {}).get("properties", {}).get(field, {})
                    for number in (m for m in prop.get("anyOf", [prop]) if m.get("type") == "integer"):
                        number["maximum"] = self.config.max_length
            api.openapi_schema = schema
        return api.openapi_schema

    def _pick(self, capability: str, model: str | None = None):
        """The (handler, engine) of the model a request names (None: the first that serves
        ``capability``); 404 naming the served models when there is none such."""
        if model is not None:
            handler = self.handlers.get(model)
            if handler is None:
                raise errors.NotFound(f"model {model!r} is not served here (served: {', '.join(self.handlers)})")
            if capability not in handler.capabilities:
                raise errors.NotFound(
                    f"model {model!r} is a {handler.kind!r} model, which does not serve /{capability} "
                    f"(served: {_listing(self.handlers.values())})")
        else:
            handler = next((h for h in self.handlers.values() if capability in h.capabilities), None)
            if handler is None:
                raise errors.NotFound(f"no model served here answers /{capability} "
                                      f"(served: {_listing(self.handlers.values())})")
        note_model(handler.name)
        return handler, self.engines[handler.name]

    def _check_length(self, *lengths: int | None) -> None:
        """Symbols per sample beyond this deployment's ``max_length`` (which its OpenAPI document
        states): a 400 naming the limit."""
        for length in (n for n in lengths if n is not None):
            if length > self.config.max_length:
                raise ValueError(f"length {length} is more than this server's limit of {self.config.max_length} "
                                 "symbols per sample (max_length)")

    def _timeout(self, requested: float | None) -> float:
        return requested or self.config.timeout_s  # both at most MAX_TIMEOUT_S (schemas, ServeConfig)

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

        models = [h.info() for h in self.handlers.values()]
        # the first model's fields stay at the top level, as when a server had one model
        return {**models[0], "models": models,
                "routes": sorted(set().union(*(h.capabilities for h in self.handlers.values()))),
                "engine": {**self.config.engine.model_dump(), "default_timeout_s": self.config.timeout_s},
                "limits": {"length": self.config.max_length, "n": MAX_SAMPLES, "prompt_chars": MAX_PROMPT_CHARS,
                           "score_chars": MAX_SCORE_CHARS, "body_bytes": MAX_BODY_BYTES, "timeout_s": MAX_TIMEOUT_S},
                "torch_threads": torch.get_num_threads()}

    @api.get("/stats")
    async def stats(self) -> dict:
        snapshots = {name: await asyncio.to_thread(engine.snapshot) for name, engine in self.engines.items()}
        return {**next(iter(snapshots.values())), "models": snapshots, "replica": _replica_id()}

    def __del__(self):  # Serve calls it when the replica shuts down
        for engine in getattr(self, "engines", {}).values():
            engine.stop()

    def check_health(self) -> None:
        """Serve's periodic health check (and /healthz): a replica whose engine process died is
        replaced by Serve."""
        for name, engine in self.engines.items():
            if not engine.alive():
                raise EngineDown(f"the engine of {name!r} is down ({engine.exit_reason}); the replica is being "
                                 "replaced")

    # ------------------------------------------------------------------------------ /generate
    @api.post("/generate", response_model=GenerateResponse, responses={**WORK, **SSE})
    async def generate(self, body: GenerateBody):
        handler, engine = self._pick("generate", body.model)
        self._check_length(body.length, body.max_tokens)  # each field keeps the limit it states
        seed = random_seed() if body.seed is None else body.seed
        ticket = engine.submit(handler.generate_job(body, seed), self._timeout(body.timeout_s))
        stream = TextStream(handler, body.n)
        if body.stream:
            return StreamingResponse(self._generate_events(engine, ticket, stream, seed), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        reasons = []
        async for kind, payload in engine.events(ticket):
            if kind == "chunk":
                stream.add(payload)
            else:
                reasons = finish_reasons(payload)
        return {"samples": stream.texts(), "finish_reasons": reasons, "seed": seed, "model": handler.summary()}

    async def _generate_events(self, engine, ticket, stream: TextStream, seed: int):
        t0, symbols = time.monotonic(), 0
        yield _sse("start", {"seed": seed, "samples": len(stream.ids), "model": stream.handler.summary()})
        try:
            async for kind, payload in engine.events(ticket):
                if kind == "chunk":
                    symbols += sum(len(v) for v in payload.values())
                    for i, text in stream.add(payload).items():
                        yield _sse("chunk", {"sample": i, "text": text})
                else:
                    for i, text in stream.finish().items():
                        yield _sse("chunk", {"sample": i, "text": text})
                    yield _sse("done", {"samples": len(stream.ids), "symbols": symbols, "seed": seed,
                                        "finish_reasons": finish_reasons(payload),
                                        "elapsed_s": round(time.monotonic() - t0, 4)})
        except Exception as e:  # noqa: BLE001 - the status line is gone: report in the stream
            yield _sse("error", error_payload(e)[1])

    # ------------------------------------------------------------------------------ /score
    @api.post("/score", response_model=ScoreResponse, responses=WORK)
    async def score(self, body: ScoreBody) -> dict:
        handler, engine = self._pick("score", body.model)
        ticket = engine.submit(handler.score_job(body), self._timeout(body.timeout_s))
        async for kind, payload in engine.events(ticket):
            if kind == "done":
                return {**score_summary(payload["log_prob"], payload["tokens"]), "model": handler.summary()}
        raise RuntimeError("scoring ended without a result")

    # ------------------------------------------------------------------------------ OpenAI's API
    @api.get("/v1/models", response_model=openai_api.ModelList, responses=openai_api.ERRORS)
    async def models(self) -> dict:
        return openai_api.model_list([h for h in self.handlers.values() if "generate" in h.capabilities], self.started)

    @api.post("/v1/completions", response_model=openai_api.Completion,
              responses={**openai_api.ERRORS, **openai_api.SSE})
    async def completions(self, body: openai_api.CompletionBody):
        handler, engine = self._pick("generate", body.model)
        self._check_length(body.max_tokens)
        completions = openai_api.Completions(engine, handler, body, self._timeout(None), current_request_id())
        if body.stream:
            return StreamingResponse(completions.stream(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await completions.answer()

    @api.post("/v1/chat/completions", include_in_schema=False)
    async def chat(self):
        raise errors.NotFound(openai_api.NO_CHAT)

    # ------------------------------------------------------------------------------ /write
    @api.post("/write", response_model=WriteResponse, responses={**WRITE, **NDJSON})
    async def write(self, body: WriteBody):
        """A page: its lines are the rows of one engine job (several jobs, one after another, when
        they do not fit in the engine's batch), each row writing one line (or one candidate of it)."""
        handler, engine = self._pick("write", body.model)
        seed = random_seed() if body.seed is None else body.seed
        max_rows = min(MAX_PAGE_ROWS, self.config.engine.max_streams)
        page = handler.page(body, seed, max_rows)
        jobs = handler.jobs(page, max_rows)
        deadline = time.monotonic() + self._timeout(body.timeout_s)
        # the first job joins the engine before answering, so a full queue is a 503 status, not a stream error
        first = engine.submit(jobs[0][1], self._timeout(body.timeout_s)) if jobs else None
        if body.stream:
            return StreamingResponse(self._write_events(handler, engine, page, jobs, deadline, first), media_type="application/x-ndjson",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        written = []
        async for _, lines in self._write_jobs(handler, engine, page, jobs, deadline, first):
            written += lines
        return {**await asyncio.to_thread(handler.answer, page, written), "model": handler.summary()}  # off the loop

    async def _write_jobs(self, handler, engine, page, jobs, deadline: float, first, on_points=None):
        """Run the page's jobs one after another (the first already submitted: ``first``); yields (job
        number, its written lines) as each ends. ``on_points(line, offsets)`` sees every row's new
        points as they come (one candidate a line)."""
        for number, (lines, job) in enumerate(jobs):
            ticket = first if number == 0 else engine.submit(job, max(deadline - time.monotonic(), 0.001))
            outputs: dict[int, list] = {i: [] for i in range(len(job.rows))}  # row -> its pen points
            async for kind, payload in engine.events(ticket):
                if kind == "chunk":
                    for i, points in payload.items():
                        outputs[i] += points
                        if on_points is not None:
                            yield number, [on_points(page.written[lines[i // page.candidates]], handler.points(points))]
            k = page.candidates
            rows = [handler.points(outputs[i]) for i in range(len(job.rows))]
            done = [await asyncio.to_thread(handler.written_line, page, line, rows[j * k : (j + 1) * k])  # off the loop
                    for j, line in enumerate(lines)]
            yield number, done

    async def _write_events(self, handler, engine, page, jobs, deadline: float, first):
        """NDJSON: {"line": i, "points": [...]} as the pens move (one candidate a line; with best_of > 1
        each chosen line once chosen), then {"done": true, ...} with the page's answer but its svg."""
        t0, written = time.monotonic(), []
        live = page.candidates == 1
        on_points = (lambda line, offsets: {"line": line, "points": offsets.round(3).tolist()}) if live else None
        try:
            async for _, items in self._write_jobs(handler, engine, page, jobs, deadline, first, on_points):
                for item in items:
                    if "offsets" not in item:  # points as they are drawn
                        yield _ndjson(item)
                        continue
                    if not live:
                        yield _ndjson({"line": item["line"], "points": item["strokes"]})
                    written.append(item)
            answer = await asyncio.to_thread(handler.answer, page, written)
            yield _ndjson({"done": True, **{k: v for k, v in answer.items() if k not in ("svg", "png", "strokes")},
                           "elapsed_s": round(time.monotonic() - t0, 4), "model": handler.summary()})
        except Exception as e:  # noqa: BLE001 - the status line is gone: report in the stream
            yield _ndjson(error_payload(e)[1])
