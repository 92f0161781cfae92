"""Stop strings and top-p (nucleus) sampling on a tiny random TextModel, in-process: a vanishing
top_p is greedy, top_p = 1 is plain sampling, a stop string ends a sample before its first
occurrence, and seeded outputs stay the same alone, in a batch and streamed by the engine."""

from __future__ import annotations

import asyncio

import pytest
import torch

from seqgen.data.tokenizers import Vocabulary
from seqgen.models.text import TextModel
from seqgen.serve.config import EngineConfig
from seqgen.serve.engine import Engine
from seqgen.text_sampling import GenerateRequest, StopSequences, TextGenerator, filter_logits, generate, generate_batch
from tests.tiny_text import tiny_text_model, tiny_vocab


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return tiny_vocab()


@pytest.fixture(scope="module")
def model(vocab) -> TextModel:
    return tiny_text_model(vocab, seed=1234)


def test_top_p_keeps_the_smallest_nucleus_reaching_p():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]], dtype=torch.float64)
    logits = probs.log()
    one, zero = torch.tensor([1.0], dtype=torch.float64), torch.tensor([0])

    def kept(p):
        out = filter_logits(logits, one, zero, torch.tensor([p], dtype=torch.float64))
        return torch.isfinite(out[0]).nonzero().flatten().tolist()

    assert kept(0.5) == [1]  # 0.5 alone reaches 0.5
    assert kept(0.51) == [1, 3] and kept(0.79) == [1, 3]
    assert kept(0.81) == [1, 2, 3] and kept(0.949) == [1, 2, 3]
    assert kept(0.951) == [0, 1, 2, 3] and kept(1.0) == [0, 1, 2, 3]
    assert kept(1e-9) == [1]
    nucleus = filter_logits(logits, one, zero, torch.tensor([0.7], dtype=torch.float64)).softmax(-1)
    assert torch.allclose(nucleus, torch.tensor([[0, 0.625, 0, 0.375]], dtype=torch.float64))


def test_top_p_one_leaves_rows_untouched_beside_rows_that_use_it():
    logits = torch.randn(3, 9, dtype=torch.float64)
    temperature, top_k = torch.tensor([0.7, 1.3, 1.0], dtype=torch.float64), torch.tensor([0, 4, 0])
    plain = filter_logits(logits, temperature, top_k)
    mixed = filter_logits(logits, temperature, top_k, torch.tensor([1.0, 1.0, 0.3], dtype=torch.float64))
    assert torch.equal(mixed[:2], plain[:2])
    assert torch.isinf(mixed[2]).any() and not torch.isinf(plain[2]).any()


def test_vanishing_top_p_is_greedy_and_top_p_one_is_plain_sampling(model, vocab):
    greedy = generate(model, vocab, "the", 40, temperature=0.0, seed=1)
    for seed in (1, 2, 3):
        assert generate(model, vocab, "the", 40, temperature=1.0, top_p=1e-9, seed=seed) == greedy
    plain = generate(model, vocab, "the", 40, temperature=1.0, seed=5, n=3)
    assert generate(model, vocab, "the", 40, temperature=1.0, top_p=1.0, seed=5, n=3) == plain
    nucleus = generate(model, vocab, "the", 40, temperature=1.0, top_p=0.5, seed=5, n=3)
    assert nucleus != plain and nucleus != [greedy[0]] * 3


def test_a_sample_ends_before_the_first_stop_string(model, vocab):
    (full,) = generate(model, vocab, "", 120, temperature=1.0, seed=11)
    stop = full[40:42]
    assert generate(model, vocab, "", 120, temperature=1.0, seed=11, stop=(stop,)) == [full[: full.find(stop)]]
    other = full[100:103]
    first = min(full.find(stop), full.find(other))
    assert generate(model, vocab, "", 120, seed=11, stop=(other, stop)) == [full[:first]]
    # strings the vocabulary cannot spell never match: the sample runs to its length
    assert generate(model, vocab, "", 120, seed=11, stop=("\u263a", "Z9")) == [full]


def test_stop_sequences_hold_back_only_what_could_still_match(vocab):
    stops = StopSequences.of(vocab, ["the ", "ox"])
    ids = vocab.encode
    assert stops.matched(ids("a fox")) == 2 and stops.matched(ids("xthe ")) == 4 and stops.matched(ids("th")) == 0
    assert stops.pending(ids("at")) == 1 and stops.pending(ids("a th")) == 2 and stops.pending(ids("o")) == 1
    assert stops.pending(ids("ab")) == 0 and stops.pending([]) == 0
    assert StopSequences.of(vocab, ["\u263a"]) is None


def test_seeded_outputs_are_the_same_alone_and_in_a_batch(model, vocab):
    requests = [GenerateRequest("the", 60, 1.0, 0, 3, 2, top_p=0.7, stop=("e ",)),
                GenerateRequest("", 80, 0.8, 5, 9, 1, top_p=0.9),
                GenerateRequest("fox", 50, 1.2, 0, 4, 1, stop=("o", "x."))]
    batched = generate_batch(model, vocab, requests)
    for r, out in zip(requests, batched):
        assert out == generate(model, vocab, r.prompt, r.length, r.temperature, r.top_k, r.seed, r.n, r.top_p, r.stop)


def test_the_engine_streams_nothing_a_stop_string_takes_back(model, vocab):
    gen = TextGenerator(model, vocab)
    (full,) = generate(model, vocab, "", 100, seed=21)
    stop = full[60:63]
    expected = full[: full.find(stop)]

    async def stream():
        engine = Engine(gen, EngineConfig(max_streams=8, flush_interval_s=0))
        try:
            noise = engine.submit(gen.job("fox", 80, seed=1, n=3), 60)  # other rows in the batch
            ticket = engine.submit(gen.job("", 100, seed=21, stop=(stop,)), 60)
            chunks, done = [], None
            async for kind, payload in engine.events(ticket):
                if kind == "chunk":
                    chunks.append(vocab.decode(payload[0]))
                else:
                    done = payload
            async for _ in engine.events(noise):
                pass
            return chunks, done
        finally:
            engine.stop()

    chunks, done = asyncio.run(asyncio.wait_for(stream(), 60))
    assert "".join(chunks) == expected and len(chunks) > 1
    assert done["rows"] == [{"length": len(expected), "stopped": True}]
