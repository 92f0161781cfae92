"""OpenAI's completions API for text models: ``POST /v1/completions`` and ``GET /v1/models``.

Every OpenAI client library, benchmark tool and framework speaks it. A request becomes one engine
job per prompt, with ``n`` rows each (`seqgen.serve.handlers.TextHandler.generate_job`), so
choice ``i`` is prompt ``i // n``, sample ``i % n`` (seed ``seed + i % n``), and it is batched with
everything else the replica runs. ``stream`` answers server-sent events in OpenAI's chunk format
(``data: {...}`` lines, ``data: [DONE]`` last); ``usage`` counts symbols (characters for a
character model). Errors come in OpenAI's shape (`seqgen.serve.errors.openai_payload`).

Not offered: chat (``/v1/chat/completions`` answers 404: a character model has no chat template),
log-probabilities, echo, penalties, and prompts given as token ids.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, AsyncIterator, Literal

from pydantic import BaseModel, ConfigDict, Field

from seqgen.rng import random_seed
from seqgen.serve.errors import error_payload, openai_payload
from seqgen.serve.handlers import TextStream, finish_reasons
from seqgen.serve.schemas import (
    MAX_LENGTH, MAX_PROMPT_CHARS, MAX_SAMPLES, GenerateBody, Int, Seed, Stop, StopField, TopPField, stop_strings,
)

# prompts in one request (each a job of n rows) and choices per prompt: at most MAX_SAMPLES rows in
# all, the most one /generate request can ask for, so no schema-valid request outlasts the deadline
MAX_PROMPTS = 4
MAX_CHOICES = MAX_SAMPLES // MAX_PROMPTS
NO_CHAT = ("this server has no chat route: its character-level models have no chat template; "
           "use POST /v1/completions with a prompt")

Prompt = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    include_usage: bool = Field(False, description="a last chunk with usage and no choices, before [DONE]")


class CompletionBody(BaseModel):
    """Body of ``POST /v1/completions`` (OpenAI's fields that a character model can honour)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    model: str | None = Field(None, max_length=256, description="a model of GET /v1/models (null: the first text "
                                                                "model)")
    prompt: Prompt | Annotated[list[Prompt], Field(min_length=1, max_length=MAX_PROMPTS)] = Field(
        ..., description=f"text to continue, or a list of up to {MAX_PROMPTS} texts")
    max_tokens: Int = Field(16, ge=1, le=MAX_LENGTH, description="symbols to generate per choice")
    temperature: float = Field(1.0, ge=0.0, le=2.0, allow_inf_nan=False, description="0 = greedy")
    top_p: float = TopPField
    n: Int = Field(1, ge=1, le=MAX_CHOICES, description="choices per prompt")
    stop: Stop = StopField
    seed: Seed | None = Field(None, description="choice i of a prompt uses seed + i; null = random")
    stream: bool = Field(False, description="server-sent events of completion chunks, then data: [DONE]")
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256, description="accepted and ignored")

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class Choice(BaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """Every error of the /v1/ routes has this shape."""

    error: OpenAIErrorDetail


def _doc(description: str) -> dict:
    return {"model": OpenAIError, "description": description}


ERRORS = {
    400: _doc("a prompt with symbols the model cannot read"),
    401: {**_doc("the server requires an API key and the request has none, or a wrong one"),
          "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}}},
    404: _doc("no such model (the message names the ones served)"),
    413: _doc("request body too large"),
    422: _doc("body is not JSON or breaks the schema"),
    500: _doc("server error"),
    503: {**_doc("at capacity: retry after the Retry-After header's seconds"),
          "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}},
    504: _doc("the request's deadline passed"),
}
SSE = {200: {"content": {"text/event-stream": {"schema": {
    "type": "object", "required": ["data"],
    "properties": {"event": {"type": "string"},
                   "data": {"type": "string", "description": "a completion chunk as JSON (the Completion schema, one "
                                                             "choice's new text; finish_reason on a choice's last), "
                                                             "or an error in OpenAI's shape; the last event: [DONE]"}}}}},
             "description": "JSON, or with stream=true server-sent events"}}


def model_list(handlers, created: int) -> dict:
    """The text models served (``created``: when this replica loaded them, as a Unix time)."""
    return {"object": "list",
            "data": [{"id": h.name, "object": "model", "created": created, "owned_by": "seqgen"} for h in handlers]}


def _data(payload) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=True, separators=(',', ':'))}\n\n"


class Completions:
    """One ``/v1/completions`` request: its jobs in the engine and its answer."""

    def __init__(self, engine, handler, body: CompletionBody, timeout_s: float, request_id: str):
        self.engine, self.handler, self.body = engine, handler, body
        self.id = f"cmpl-{request_id}"
        self.created = int(time.time())
        seed = random_seed() if body.seed is None else body.seed
        self.prompts = body.prompts()
        # every prompt is checked before any job is queued: one unreadable prompt is a 400 for all
        jobs = [handler.generate_job(GenerateBody(prompt=p, length=body.max_tokens, temperature=body.temperature,
                                                  top_p=body.top_p, stop=list(stop_strings(body.stop)) or None,
                                                  n=body.n, seed=seed), seed)
                for p in self.prompts]
        self.prompt_tokens = sum(len(job.prompt) for job in jobs)  # the prompt's symbols (start symbol aside)
        self.tickets = []
        try:
            for job in jobs:
                self.tickets.append(engine.submit(job, timeout_s))
        except BaseException:
            for ticket in self.tickets:  # an overloaded engine refuses the rest: free what it took
                ticket.cancel()
            raise
        self.streams = [TextStream(handler, body.n) for _ in jobs]

    def _chunk(self, choices: list[dict], usage: dict | None = None) -> dict:
        chunk = {"id": self.id, "object": "text_completion", "created": self.created, "model": self.handler.name,
                 "choices": choices}
        if usage is not None:
            chunk["usage"] = usage
        return chunk

    def _usage(self, completion_tokens: int) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": self.prompt_tokens + completion_tokens}

    async def _events(self) -> AsyncIterator[tuple[int, str, dict]]:
        """(job index, kind, payload) of every job's engine events, as they come."""
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(j, ticket):
            try:
                async for kind, payload in self.engine.events(ticket):
                    await queue.put((j, kind, payload))
            except BaseException as e:  # noqa: BLE001 - re-raised by the reader
                await queue.put((j, "error", e))

        tasks = [asyncio.create_task(pump(j, t)) for j, t in enumerate(self.tickets)]
        try:
            for _ in tasks:  # until every job is done
                while True:
                    j, kind, payload = await queue.get()
                    if kind == "error":
                        raise payload
                    yield j, kind, payload
                    if kind == "done":
                        break
        finally:
            for task in tasks:
                task.cancel()  # a client gone: the engine frees the rows at its next step

    async def answer(self) -> dict:
        choices: dict[int, dict] = {}
        tokens = 0
        async for j, kind, payload in self._events():
            if kind == "chunk":
                self.streams[j].add(payload)
            else:
                for i, (text, reason, row) in enumerate(zip(self.streams[j].texts(), finish_reasons(payload),
                                                            payload["rows"])):
                    choices[j * self.body.n + i] = {"index": j * self.body.n + i, "text": text, "logprobs": None,
                                                    "finish_reason": reason}
                    tokens += row["length"]
        return {**self._chunk([choices[i] for i in sorted(choices)]), "usage": self._usage(tokens)}

    async def stream(self) -> AsyncIterator[str]:
        tokens = 0
        try:
            async for j, kind, payload in self._events():
                base = j * self.body.n
                if kind == "chunk":
                    for i, text in sorted(self.streams[j].add(payload).items()):
                        yield _data(self._chunk([{"index": base + i, "text": text, "logprobs": None,
                                                  "finish_reason": None}]))
                else:
                    rest = self.streams[j].finish()
                    for i, reason in enumerate(finish_reasons(payload)):
                        yield _data(self._chunk([{"index": base + i, "text": rest.get(i, ""), "logprobs": None,
                                                  "finish_reason": reason}]))
                    tokens += sum(row["length"] for row in payload["rows"])
            if self.body.stream_options is not None and self.body.stream_options.include_usage:
                yield _data(self._chunk([], self._usage(tokens)))
        except Exception as e:  # noqa: BLE001 - the status line is gone: report in the stream
            status, body, _ = error_payload(e)
            yield _data(openai_payload(status, body))
        yield "data: [DONE]\n\n"
