"""OpenAI's completions API through the real ``openai`` client against a real Serve deployment on
127.0.0.1: plain, streamed, n > 1, stop strings, list prompts, usage, OpenAI's error shape (401 as
AuthenticationError, 400 for an unreadable prompt, 404 for an unknown model and for chat), and 32
concurrent streams through the async client."""

from __future__ import annotations

import asyncio

import openai
import pytest
import requests

from tests.serve.conftest import KEY

pytestmark = pytest.mark.ray

MODEL = "serve-tiny"


@pytest.fixture(scope="module")
def client(serve_url):
    return openai.OpenAI(base_url=f"{serve_url}/v1", api_key="unused", max_retries=0, timeout=60)


def generate(url: str, **body) -> list[str]:
    r = requests.post(f"{url}/generate", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["samples"]


def test_models_lists_the_text_model(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL] and models.data[0].owned_by == "seqgen"


def test_a_completion_is_generate_with_openai_names(client, serve_url):
    c = client.completions.create(model=MODEL, prompt="ROMEO:", max_tokens=40, temperature=0.9, top_p=0.95, seed=5)
    assert c.object == "text_completion" and c.model == MODEL and c.id.startswith("cmpl-")
    (choice,) = c.choices
    assert choice.index == 0 and choice.finish_reason == "length"
    assert choice.text == generate(serve_url, prompt="ROMEO:", length=40, temperature=0.9, top_p=0.95, seed=5)[0]
    assert c.usage.prompt_tokens == len("ROMEO:") and c.usage.completion_tokens == 40
    assert c.usage.total_tokens == 46


def test_n_choices_and_list_prompts(client, serve_url):
    c = client.completions.create(model=MODEL, prompt=["KING", "QUEEN:"], max_tokens=20, n=3, seed=9)
    assert [ch.index for ch in c.choices] == list(range(6))
    for p, prompt in enumerate(["KING", "QUEEN:"]):
        assert [ch.text for ch in c.choices[3 * p: 3 * p + 3]] == generate(serve_url, prompt=prompt, length=20, n=3,
                                                                           seed=9)
    assert c.usage.prompt_tokens == 4 + 6 and c.usage.completion_tokens == 6 * 20


def test_a_stop_string_ends_the_choice(client, serve_url):
    full = generate(serve_url, length=300, seed=2)[0]
    stop = full[60:62]
    c = client.completions.create(model=MODEL, prompt="", max_tokens=300, seed=2, stop=[stop, "zz"])
    assert c.choices[0].text == full[: full.find(stop)] and c.choices[0].finish_reason == "stop"
    assert c.usage.completion_tokens == full.find(stop)


def test_streaming_sends_chunks_then_finish_reasons_usage_and_done(client, serve_url):
    full = generate(serve_url, prompt="ROMEO:", length=120, seed=4, n=2)
    stop = full[1][70:72]
    chunks = list(client.completions.create(model=MODEL, prompt="ROMEO:", max_tokens=120, seed=4, n=2, stream=True,
                                            stop=stop, stream_options={"include_usage": True}))
    texts, reasons = {0: "", 1: ""}, {}
    for chunk in chunks[:-1]:
        assert chunk.object == "text_completion" and chunk.model == MODEL and len(chunk.choices) == 1
        choice = chunk.choices[0]
        assert choice.index not in reasons  # nothing after a choice's finish_reason
        texts[choice.index] += choice.text
        if choice.finish_reason is not None:
            reasons[choice.index] = choice.finish_reason
    expected = [t[: t.find(stop)] if stop in t else t for t in full]
    assert [texts[0], texts[1]] == expected
    assert reasons == {i: "stop" if stop in full[i] else "length" for i in (0, 1)}
    assert len(chunks) > 4  # streamed in pieces
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == sum(map(len, expected))
    raw = requests.post(f"{serve_url}/v1/completions", json={"prompt": "A", "max_tokens": 5, "stream": True},
                        timeout=60).text
    assert raw.rstrip().endswith("data: [DONE]") and all(
        block.startswith("data: ") for block in raw.strip().split("\n\n"))


def test_errors_come_in_openai_shape(client, serve_url, keyed_url):
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model=MODEL, prompt="caf\u00e9 \u263a", max_tokens=5)
    assert bad.value.status_code == 400 and "\u263a" in bad.value.message
    with pytest.raises(openai.NotFoundError) as missing:
        client.completions.create(model="gpt-4", prompt="a", max_tokens=5)
    assert MODEL in missing.value.message
    with pytest.raises(openai.NotFoundError) as chat:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert "chat template" in chat.value.message
    with pytest.raises(openai.UnprocessableEntityError):
        client.completions.create(model=MODEL, prompt="a", max_tokens=0)
    keyed = openai.OpenAI(base_url=f"{keyed_url}/v1", api_key="wrong", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError) as denied:
        keyed.completions.create(model=MODEL, prompt="a", max_tokens=5)
    assert denied.value.status_code == 401 and denied.value.body["code"] == "invalid_api_key"
    right = openai.OpenAI(base_url=f"{keyed_url}/v1", api_key=KEY, max_retries=0, timeout=60)
    assert len(right.completions.create(model=MODEL, prompt="a", max_tokens=5).choices[0].text) == 5
    r = requests.post(f"{serve_url}/v1/completions", json={"prompt": "a", "max_tokens": "5"}, timeout=60)
    assert r.status_code == 422 and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_32_concurrent_streams_through_the_async_client(serve_url):
    async def main():
        client = openai.AsyncOpenAI(base_url=f"{serve_url}/v1", api_key="unused", max_retries=0, timeout=120)

        async def one(i):
            text = ""
            async for chunk in await client.completions.create(model=MODEL, prompt="", max_tokens=60, seed=i,
                                                               stream=True):
                text += "".join(c.text for c in chunk.choices)
            return text

        try:
            return await asyncio.gather(*(one(i) for i in range(32)))
        finally:
            await client.close()

    texts = asyncio.run(main())
    for i in (0, 17, 31):  # seeded: the same as alone
        assert texts[i] == generate(serve_url, length=60, seed=i)[0]
    assert all(len(t) == 60 for t in texts)
