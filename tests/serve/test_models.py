"""Several models behind one URL (a real Serve deployment on 127.0.0.1 serving the tiny text
checkpoint, a tiny handwriting network and the bundled Shakespeare model side by side): each
request picks its model with ``model`` (default: the first of the route's kind), /info and
/v1/models list them, an unknown or unsuitable model is a 404 naming the served ones, in the
project's error shape and, on /v1, OpenAI's."""

from __future__ import annotations

import openai
import pytest
import requests

pytestmark = pytest.mark.ray

TIMEOUT = 60
TINY, HAND, BARD = "serve-tiny", "handwriting-tiny", "shakespeare-bundled"


def post(url: str, route: str, body: dict) -> requests.Response:
    return requests.post(f"{url}{route}", json=body, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def bard():
    from seqgen.catalog import bundled, load_model
    from seqgen.data.tokenizers import Vocabulary

    model, loaded = load_model(bundled("shakespeare"))
    return model, Vocabulary.from_json(loaded.meta["vocab"])


def test_info_and_v1_models_list_every_served_model(multi_url):
    info = requests.get(f"{multi_url}/info", timeout=TIMEOUT).json()
    assert [m["run_name"] for m in info["models"]] == [TINY, HAND, BARD]
    assert [m["kind"] for m in info["models"]] == ["text", "handwriting_synthesis", "text"]
    assert info["run_name"] == TINY  # the first model's fields stay at the top level
    assert info["routes"] == ["generate", "score", "write"]
    assert info["models"][1]["routes"] == ["write"] and info["models"][1]["styles"]
    client = openai.OpenAI(base_url=f"{multi_url}/v1", api_key="unused", max_retries=0, timeout=TIMEOUT)
    assert [m.id for m in client.models.list().data] == [TINY, BARD]  # the text models: those that complete
    stats = requests.get(f"{multi_url}/stats", timeout=TIMEOUT).json()
    assert set(stats["models"]) == {TINY, HAND, BARD}
    paths = requests.get(f"{multi_url}/openapi.json", timeout=TIMEOUT).json()["paths"]
    assert {"/generate", "/score", "/write", "/v1/completions"} <= set(paths)


def test_each_request_runs_on_the_model_it_names(multi_url, serve_url, bard):
    from seqgen.text_sampling import generate

    body = {"prompt": "ROMEO:", "length": 60, "temperature": 0.0}
    greedy = generate(*bard, "ROMEO:", length=60, temperature=0.0)
    named = post(multi_url, "/generate", {**body, "model": BARD})
    assert named.status_code == 200, named.text
    assert named.json()["samples"] == greedy and named.json()["model"]["run_name"] == BARD
    default = post(multi_url, "/generate", body).json()  # no model: the first text model, as served alone
    assert default["model"]["run_name"] == TINY and default["samples"] == post(serve_url, "/generate", body).json()[
        "samples"] != greedy
    with requests.post(f"{multi_url}/generate", json={**body, "model": BARD, "stream": True}, stream=True,
                       timeout=TIMEOUT) as r:
        assert r.status_code == 200
        events = r.text
    assert f'"run_name":"{BARD}"' in events
    client = openai.OpenAI(base_url=f"{multi_url}/v1", api_key="unused", max_retries=0, timeout=TIMEOUT)
    c = client.completions.create(model=BARD, prompt="ROMEO:", max_tokens=60, temperature=0.0)
    assert c.model == BARD and c.choices[0].text == greedy[0]
    streamed = "".join(ch.choices[0].text for ch in client.completions.create(
        model=BARD, prompt="ROMEO:", max_tokens=60, temperature=0.0, stream=True) if ch.choices)
    assert streamed == greedy[0]
    scores = {m: post(multi_url, "/score", {"text": "To be, or not to be", "model": m}).json() for m in (TINY, BARD)}
    assert scores[BARD]["model"]["run_name"] == BARD and scores[TINY]["model"]["run_name"] == TINY
    assert scores[BARD]["bits_per_token"] < scores[TINY]["bits_per_token"]  # the trained model reads it better
    written = post(multi_url, "/write", {"text": "hi", "seed": 3})  # the one handwriting model, by default
    assert written.status_code == 200 and written.json()["model"]["run_name"] == HAND
    assert post(multi_url, "/write", {"text": "hi", "seed": 3, "model": HAND}).json()["strokes"] == \
        written.json()["strokes"]


def test_an_unknown_or_unsuitable_model_is_a_404_naming_the_served_ones(multi_url):
    for route, body in (("/generate", {"prompt": "a"}), ("/score", {"text": "a"}), ("/write", {"text": "a"})):
        r = post(multi_url, route, {**body, "model": "gpt-4"})
        assert r.status_code == 404 and r.json()["error"] == "not_found", r.text
        assert all(name in r.json()["message"] for name in (TINY, HAND, BARD)), r.text
    wrong_kind = post(multi_url, "/generate", {"prompt": "a", "model": HAND})
    assert wrong_kind.status_code == 404 and "/write" in wrong_kind.json()["message"]
    assert post(multi_url, "/write", {"text": "a", "model": BARD}).status_code == 404
    client = openai.OpenAI(base_url=f"{multi_url}/v1", api_key="unused", max_retries=0, timeout=TIMEOUT)
    with pytest.raises(openai.NotFoundError) as missing:
        client.completions.create(model="gpt-4", prompt="a", max_tokens=5)
    assert TINY in missing.value.message and BARD in missing.value.message
    assert set(missing.value.body) == {"message", "type", "param", "code"}
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model=HAND, prompt="a", max_tokens=5)
    r = post(multi_url, "/generate", {"prompt": "a", "model": 5})  # not a name at all: the schema's 422
    assert r.status_code == 422


def test_a_deployments_max_length_is_stated_and_kept(multi_url, serve_url):
    """``max_length`` (1,000 at /multi; the default 5,000 at /): the OpenAPI document states it as
    the maximum of `length` and `max_tokens`, /info lists it, and a request beyond it is a 400
    naming the limit on both routes; a request at the limit is served."""
    def maxima(url):
        schemas = requests.get(f"{url}/openapi.json", timeout=TIMEOUT).json()["components"]["schemas"]
        fields = [schemas["GenerateBody"]["properties"]["length"],
                  *schemas["GenerateBody"]["properties"]["max_tokens"]["anyOf"],
                  schemas["CompletionBody"]["properties"]["max_tokens"]]
        return [f["maximum"] for f in fields if f.get("type") == "integer"]

    assert maxima(multi_url) == [1000, 1000, 1000] and maxima(serve_url) == [5000, 5000, 5000]
    assert requests.get(f"{multi_url}/info", timeout=TIMEOUT).json()["limits"]["length"] == 1000
    for route, body in (("/generate", {"length": 1001}), ("/generate", {"max_tokens": 1001}),
                        ("/generate", {"length": 1001, "max_tokens": 10}),  # each field keeps its stated maximum
                        ("/v1/completions", {"prompt": "", "max_tokens": 1001})):
        r = post(multi_url, route, body)
        assert r.status_code == 400 and "limit of 1000 symbols per sample (max_length)" in r.text, r.text
    r = post(multi_url, "/generate", {"length": 1000, "stop": "\n", "seed": 1})
    assert r.status_code == 200, r.text
