"""OpenAI's completion format, in-process: `openai_api.Completions` over a real engine (a thread)
and a real tiny text checkpoint: choice indices, texts equal to offline generation, usage, the
streamed chunks, the usage chunk and [DONE], and the error shape."""

from __future__ import annotations

import asyncio
import json

import pytest

from seqgen.catalog import load_model
from seqgen.serve.config import EngineConfig
from seqgen.serve.engine import Engine
from seqgen.serve.errors import openai_payload
from seqgen.serve.handlers import TextHandler
from seqgen.serve.openai_api import CompletionBody, Completions, model_list
from seqgen.text_sampling import generate
from tiny_storage import new_storage, text_checkpoint, text_dataset


@pytest.fixture(scope="module")
def handler(tmp_path_factory):
    st = new_storage("openai-format")
    url = text_checkpoint(st, text_dataset(st, tmp_path_factory.mktemp("openai")), run="tiny-openai")
    model, loaded = load_model(url)
    return TextHandler(model, loaded, url)


def run(handler, body: dict, stream: bool):
    async def main():
        engine = Engine(handler.gen, EngineConfig(max_streams=16, flush_interval_s=0))
        try:
            completions = Completions(engine, handler, CompletionBody(**body), 60, "req-1")
            if stream:
                return [piece async for piece in completions.stream()]
            return await completions.answer()
        finally:
            engine.stop()

    return asyncio.run(asyncio.wait_for(main(), 60))


def offline(handler, prompt: str, n: int, **kw) -> list[str]:
    return generate(handler.model, handler.vocab, prompt, kw.pop("length", 30), seed=5, n=n, **kw)


def test_an_answer_has_openai_fields_and_the_offline_texts(handler):
    answer = run(handler, {"prompt": ["th", "a"], "n": 2, "max_tokens": 30, "seed": 5}, stream=False)
    assert answer["id"] == "cmpl-req-1" and answer["object"] == "text_completion" and answer["model"] == "tiny-openai"
    assert [c["index"] for c in answer["choices"]] == [0, 1, 2, 3]
    assert [c["text"] for c in answer["choices"]] == offline(handler, "th", 2) + offline(handler, "a", 2)
    assert {c["finish_reason"] for c in answer["choices"]} == {"length"}
    assert all(c["logprobs"] is None for c in answer["choices"])
    assert answer["usage"] == {"prompt_tokens": 3, "completion_tokens": 120, "total_tokens": 123}


def test_a_stream_is_data_chunks_then_usage_then_done(handler):
    (full,) = offline(handler, "th", 1, length=80)
    stop = full[30:32]
    pieces = run(handler, {"prompt": "th", "max_tokens": 80, "seed": 5, "stop": stop, "stream": True,
                           "stream_options": {"include_usage": True}}, stream=True)
    assert all(p.startswith("data: ") and p.endswith("\n\n") for p in pieces) and pieces[-1] == "data: [DONE]\n\n"
    chunks = [json.loads(p[6:]) for p in pieces[:-1]]
    *text_chunks, usage = chunks
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == full.find(stop)
    assert all(len(c["choices"]) == 1 and c["id"] == "cmpl-req-1" for c in text_chunks)
    assert "".join(c["choices"][0]["text"] for c in text_chunks) == full[: full.find(stop)]
    assert [c["choices"][0]["finish_reason"] for c in text_chunks] == [None] * (len(text_chunks) - 1) + ["stop"]


def test_models_and_errors_in_openai_shape(handler):
    assert model_list([handler], 7) == {"object": "list", "data": [
        {"id": "tiny-openai", "object": "model", "created": 7, "owned_by": "seqgen"}]}
    assert openai_payload(404, {"error": "not_found", "message": "no such model"}) == {
        "error": {"message": "no such model", "type": "invalid_request_error", "param": None, "code": "not_found"}}
    assert openai_payload(503, {"error": "overloaded", "message": "busy"})["error"]["type"] == "server_error"
