"""Sampling controls on a tiny random TextModel: greedy, temperature, top-k, seeds, batching,
beam search and scoring, each checked against a decoding loop written here by hand."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from seqgen.data.tokenizers import Vocabulary, split_symbols
from seqgen.models.text import TextModel
from seqgen.text_sampling import (
    GenerateRequest,
    beam_search,
    filter_logits,
    generate,
    generate_batch,
    score_text,
    start_token,
)
from tests.tiny_text import tiny_text_model, tiny_vocab


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return tiny_vocab()


@pytest.fixture(scope="module")
def model(vocab) -> TextModel:
    return tiny_text_model(vocab, seed=1234)


def _by_hand_greedy(model, vocab, prompt: str, length: int) -> str:
    ids = [start_token(vocab), *vocab.encode(prompt).tolist()]
    state = model.initial_state(1)
    with torch.no_grad():
        for tok in ids[:-1]:
            _, state = model(torch.tensor([[tok]]), state)
        x, out = ids[-1], []
        for _ in range(length):
            logits, state = model(torch.tensor([[x]]), state)
            x = int(logits[0, -1].argmax())
            out.append(x)
    return vocab.decode(out)


def test_start_token(vocab):
    assert vocab.symbols[start_token(vocab)] == "\n"
    words = Vocabulary.build("word", Counter(split_symbols("word", b"a b\n")))
    assert words.symbols[start_token(words)] == "<eos>"


@pytest.mark.parametrize("prompt", ["", "the ", "T"])
def test_greedy_and_near_zero_temperature_equal_argmax(model, vocab, prompt):
    expected = _by_hand_greedy(model, vocab, prompt, 40)
    assert len(expected) == 40
    assert generate(model, vocab, prompt, 40, temperature=0.0, seed=1) == [expected]
    assert generate(model, vocab, prompt, 40, temperature=1e-6, seed=2) == [expected]
    assert generate(model, vocab, prompt, 40, temperature=1.0, top_k=1, seed=3) == [expected]
    (beam_text, _), = beam_search(model, vocab, prompt, length=40, width=1)
    assert beam_text == expected


def test_seeds(model, vocab):
    a = generate(model, vocab, "the", 60, temperature=1.0, seed=7)
    b = generate(model, vocab, "the", 60, temperature=1.0, seed=7)
    c = generate(model, vocab, "the", 60, temperature=1.0, seed=8)
    assert a == b
    assert a != c
    assert a[0] != _by_hand_greedy(model, vocab, "the", 60)  # temperature 1 really samples
    many = generate(model, vocab, "", 30, seed=5, n=3)  # n rows: seeds 5, 6, 7
    assert len(many) == 3 and len(set(many)) == 3
    assert many[1] == generate(model, vocab, "", 30, seed=6)[0]


def test_unknown_prompt_characters_named(model, vocab):
    with pytest.raises(ValueError, match=r"never seen: '@', 'é'"):
        generate(model, vocab, "the é@", 5)
    with pytest.raises(ValueError, match="'#'"):
        beam_search(model, vocab, "#", 5)
    with pytest.raises(ValueError, match="'~'"):
        score_text(model, vocab, "a~")


def test_batch_equals_alone(model, vocab):
    requests = [
        GenerateRequest(prompt="the ", length=25, temperature=0.8, seed=11),
        GenerateRequest(prompt="", length=7, temperature=1.3, top_k=5, seed=12, n=2),
        GenerateRequest(prompt="THE END", length=40, temperature=0.0, seed=13),
        GenerateRequest(prompt="q", length=18, temperature=0.5, top_k=3, seed=14),
        GenerateRequest(prompt="the ", length=25, temperature=0.8, seed=99),  # same prompt, other seed
    ]
    batched = generate_batch(model, vocab, requests)
    assert [len(texts) for texts in batched] == [1, 2, 1, 1, 1]
    for r, texts in zip(requests, batched):
        alone = generate(model, vocab, r.prompt, r.length, r.temperature, r.top_k, r.seed, r.n)
        assert texts == alone
        assert all(len(t) == r.length for t in texts)
    assert batched[0] != batched[4]


def test_filter_logits():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0], [1.0, 3.0, 2.0, 0.0], [0.5, 0.1, 0.2, 0.9]])
    out = filter_logits(logits, torch.tensor([2.0, 0.0, 1.0]), torch.tensor([2, 0, 0]))
    torch.testing.assert_close(out[0], torch.tensor([-math.inf, 1.5, 1.0, -math.inf]))  # /tau, top-2
    assert out[1].softmax(-1).tolist() == [0.0, 1.0, 0.0, 0.0]  # greedy row
    torch.testing.assert_close(out[2], logits[2])  # tau = 1, no top-k: unchanged
    k1 = filter_logits(logits[2:], torch.tensor([1.0]), torch.tensor([1]))
    assert k1.softmax(-1).argmax().item() == 3 and (k1.isinf().sum() == 3)
    big_k = filter_logits(logits[2:], torch.tensor([1.0]), torch.tensor([99]))
    torch.testing.assert_close(big_k, logits[2:])


def test_beam_search_scores(model, vocab):
    beams = beam_search(model, vocab, "the", length=6, width=4)
    assert len(beams) == 4
    scores = [s for _, s in beams]
    assert scores == sorted(scores, reverse=True)
    assert len({t for t, _ in beams}) == 4
    for text, s in beams:  # each beam's score is the log-probability of its continuation
        full = score_text(model, vocab, "the" + text)["log_prob"]
        prompt = score_text(model, vocab, "the")["log_prob"]
        assert full - prompt == pytest.approx(s, abs=1e-4)
    # the best beam is at least as likely as the greedy continuation
    greedy = _by_hand_greedy(model, vocab, "the", 6)
    greedy_lp = score_text(model, vocab, "the" + greedy)["log_prob"] - score_text(model, vocab, "the")["log_prob"]
    assert scores[0] >= greedy_lp - 1e-5


def test_score_text_is_sum_of_step_log_softmax(model, vocab):
    text = "the lazy fox.\n"
    ids = [start_token(vocab), *vocab.encode(text).tolist()]
    state, total = model.initial_state(1), 0.0
    with torch.no_grad():
        for cur, nxt in zip(ids, ids[1:]):
            logits, state = model(torch.tensor([[cur]]), state)
            total += torch.log_softmax(logits[0, -1].double(), -1)[nxt].item()
    got = score_text(model, vocab, text)
    n = len(text)
    assert got["tokens"] == n
    assert got["log_prob"] == pytest.approx(total, rel=1e-5)
    assert got["bits_per_token"] == pytest.approx(-total / math.log(2) / n, rel=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(-total / n), rel=1e-5)
    with pytest.raises(ValueError, match="empty"):
        score_text(model, vocab, "")


@pytest.mark.parametrize("hidden", [16, 128])
def test_a_row_steps_to_the_same_bits_in_any_batch(vocab, hidden):
    """`seqgen.sampling.step` pads small batches (BLAS uses other kernels for 1-3 rows), so a row's
    outputs and state are bitwise those it gets alone, whatever else is in the batch."""
    from seqgen.config import ModelConfig
    from seqgen.models.text import TextModel
    from seqgen.sampling import step
    from seqgen.text_sampling import TextGenerator

    torch.manual_seed(0)
    gen = TextGenerator(TextModel(ModelConfig(hidden_size=hidden, num_layers=2), len(vocab)).eval(), vocab)
    x = torch.randint(len(vocab), (70,))
    state = tuple(tuple(torch.randn_like(t) for t in layer) for layer in gen.initial_state(70))
    with torch.no_grad():
        alone, _, alone_state = step(gen, x[:1], tuple(tuple(t[:1] for t in layer) for layer in state), None)
        for b in (2, 3, 4, 5, 17, 70):
            params, _, new_state = step(gen, x[:b], tuple(tuple(t[:b] for t in layer) for layer in state), None)
            assert torch.equal(params[:1], alone), b
            assert all(torch.equal(a[:1], s) for la, ls in zip(new_state, alone_state) for a, s in zip(la, ls))


def test_non_finite_outputs_are_an_error_offline(vocab):
    from seqgen.config import ModelConfig
    from seqgen.models.text import TextModel

    m = TextModel(ModelConfig(hidden_size=8, num_layers=1), len(vocab)).eval()
    with torch.no_grad():
        m.head.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="not finite at step 1"):
        generate(m, vocab, "the", 5, seed=0)
