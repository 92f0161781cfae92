"""Sampling controls and text generation, written once for every text model (the step protocol).

* temperature tau: softmax(yhat / tau); tau = 0 is greedy (argmax)           (char-rnn)
* top-k: only the k most likely symbols can be drawn
* priming: the prompt is fed teacher-forced, then the model runs free        (sec. 6)
* seeds: every output row has its own generator, so a request's text depends only on its seed,
  not on which other requests share its batch
* beam search: the k most probable continuations with their log-probabilities
* scoring: total log-probability, bits per token and perplexity of a text  (WildML)

Generation starts from a start symbol (newline for character vocabularies, ``<eos>`` for words:
the end of the previous sentence), standing in for the paper's all-zero first input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_map

from seqgen.data.tokenizers import EOS, Vocabulary


@dataclass
class GenerateRequest:
    prompt: str = ""
    length: int = 200
    temperature: float = 1.0
    top_k: int = 0
    seed: int | None = None
    n: int = 1


def start_token(vocab: Vocabulary) -> int:
    for symbol in (EOS, "\n", 10):
        if symbol in vocab.index:
            return vocab.index[symbol]
    return 0


def filter_logits(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """logits (B, V) scaled by per-row temperature, with all but each row's top-k masked.

    Rows with temperature 0 are returned one-hot at the argmax (greedy)."""
    greedy = temperature <= 0
    scaled = logits / torch.where(greedy, torch.ones_like(temperature), temperature)[:, None]
    k = torch.where(top_k > 0, top_k, torch.full_like(top_k, logits.shape[-1])).clamp(max=logits.shape[-1])
    kth = scaled.sort(dim=-1, descending=True).values.gather(1, (k - 1)[:, None])
    scaled = scaled.masked_fill(scaled < kth, -math.inf)
    argmax = F.one_hot(logits.argmax(-1), logits.shape[-1]).bool()
    return torch.where(greedy[:, None], torch.where(argmax, 0.0, -math.inf), scaled)


def _cat_states(states: list):
    return tree_map(lambda *ts: torch.cat(ts, dim=0), *states) if len(states) > 1 else states[0]


@torch.no_grad()
def generate_batch(model, vocab: Vocabulary, requests: list[GenerateRequest]) -> list[list[str]]:
    """Serve many requests with one forward pass per step; returns n texts per request."""
    model.eval()
    device = next(model.parameters()).device
    rows, states, lasts = [], [], []
    for r in requests:
        ids = torch.as_tensor([start_token(vocab), *vocab.encode(r.prompt)], dtype=torch.long, device=device)
        state = model.initial_state(1, device)
        if len(ids) > 1:  # prime: teacher-force all but the last prompt symbol
            _, state = model(ids[None, :-1], state)
        seed = r.seed if r.seed is not None else int(torch.randint(2**62, ()))
        for i in range(r.n):
            rows.append((r, torch.Generator().manual_seed(seed + i)))
            states.append(state)
            lasts.append(ids[-1])
    state = _cat_states(states)
    x = torch.stack(lasts)[:, None]
    temperature = torch.tensor([r.temperature for r, _ in rows], device=device)
    top_k = torch.tensor([r.top_k for r, _ in rows], device=device)
    steps = max(r.length for r, _ in rows)
    out = torch.zeros(len(rows), steps, dtype=torch.long)
    for t in range(steps):
        logits, state = model(x, state)
        probs = filter_logits(logits[:, -1].float(), temperature, top_k).softmax(-1).cpu()
        nxt = torch.stack([torch.multinomial(probs[i], 1, generator=g)[0] for i, (_, g) in enumerate(rows)])
        out[:, t] = nxt
        x = nxt.to(device)[:, None]
    texts, i = [], 0
    for r in requests:
        texts.append([vocab.decode(out[j, : r.length].tolist()) for j in range(i, i + r.n)])
        i += r.n
    return texts


def generate(model, vocab: Vocabulary, prompt: str = "", length: int = 200, temperature: float = 1.0,
             top_k: int = 0, seed: int | None = None, n: int = 1) -> list[str]:
    return generate_batch(model, vocab, [GenerateRequest(prompt, length, temperature, top_k, seed, n)])[0]


@torch.no_grad()
def beam_search(model, vocab: Vocabulary, prompt: str = "", length: int = 50, width: int = 5) -> list[tuple[str, float]]:
    """The ``width`` most probable continuations of ``prompt`` (log-probabilities in nats)."""
    model.eval()
    device = next(model.parameters()).device
    ids = torch.as_tensor([start_token(vocab), *vocab.encode(prompt)], dtype=torch.long, device=device)
    state = model.initial_state(1, device)
    if len(ids) > 1:
        _, state = model(ids[None, :-1], state)
    x = ids[-1:][None]
    scores = torch.zeros(1, device=device)
    seqs = torch.zeros(1, 0, dtype=torch.long, device=device)
    for _ in range(length):
        logits, state = model(x, state)
        logp = scores[:, None] + logits[:, -1].log_softmax(-1)  # (beams, V)
        top = logp.flatten().topk(min(width, logp.numel()))
        beam, token = top.indices // logp.shape[1], top.indices % logp.shape[1]
        scores, seqs = top.values, torch.cat([seqs[beam], token[:, None]], dim=1)
        state = tree_map(lambda t: t[beam], state)
        x = token[:, None]
    return [(vocab.decode(s.tolist()), float(v)) for s, v in zip(seqs, scores)]


@torch.no_grad()
def score_text(model, vocab: Vocabulary, text: str) -> dict:
    """Log-probability of ``text`` after the start symbol, with per-token summaries."""
    model.eval()
    device = next(model.parameters()).device
    ids = torch.as_tensor([start_token(vocab), *vocab.encode(text)], dtype=torch.long, device=device)
    if len(ids) < 2:
        raise ValueError("text to score is empty")
    logits, _ = model(ids[None, :-1], model.initial_state(1, device))
    logp = logits[0].log_softmax(-1).gather(1, ids[1:, None]).sum().item()
    n = len(ids) - 1
    return {"log_prob": logp, "tokens": n, "bits_per_token": -logp / math.log(2) / n,
            "perplexity": math.exp(-logp / n)}
