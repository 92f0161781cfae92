"""Text generation on the step protocol (`seqgen.sampling`): the categorical draw, priming, scoring.

* temperature tau: softmax(yhat / tau); tau below ``TEMPERATURE_FLOOR`` (0 included) is greedy
  (argmax): dividing by a vanishing tau only overflows towards the same argmax      (char-rnn)
* top-k: only the k most likely symbols can be drawn
* top-p (nucleus, Holtzman et al. 2020): only the most likely symbols whose probabilities sum to
  p (the first that reaches it included) can be drawn; applied after temperature and top-k
* stop sequences: a row ends before the first stop string it produces (`StopSequences`)
* priming: the prompt is fed teacher-forced, then the model runs free        (sec. 6)
* seeds: sample i of a request uses seed + i; its text depends only on that seed
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
from torch import Tensor
from torch.utils._pytree import tree_map

from seqgen import rng
from seqgen.data.tokenizers import EOS, Vocabulary
from seqgen.sampling import Job, Row, run

TEMPERATURE_FLOOR = 1e-2  # below it sampling is greedy


@dataclass
class GenerateRequest:
    prompt: str = ""
    length: int = 200
    temperature: float = 1.0
    top_k: int = 0
    seed: int | None = None
    n: int = 1
    top_p: float = 1.0
    stop: tuple[str, ...] = ()


def start_token(vocab: Vocabulary) -> int:
    for symbol in (EOS, "\n", 10):
        if symbol in vocab.index:
            return vocab.index[symbol]
    return 0


def filter_logits(logits: Tensor, temperature: Tensor, top_k: Tensor, top_p: Tensor | None = None) -> Tensor:
    """logits (B, V) scaled by per-row temperature, with all but each row's top-k, then all but its
    top-p nucleus masked (-inf). Rows with top_k 0 and top_p 1 are only scaled.

    Rows with temperature below ``TEMPERATURE_FLOOR`` are returned -inf except at the argmax (greedy).
    """
    greedy = temperature < TEMPERATURE_FLOOR
    scaled = logits / torch.where(greedy, torch.ones_like(temperature), temperature)[:, None].to(logits.dtype)
    if bool((top_k > 0).any()):
        k = torch.where(top_k > 0, top_k, torch.full_like(top_k, logits.shape[-1])).clamp(max=logits.shape[-1])
        kth = scaled.sort(dim=-1, descending=True).values.gather(1, (k - 1)[:, None])
        scaled = scaled.masked_fill(scaled < kth, -math.inf)
    if top_p is not None and bool((top_p < 1).any()):
        # stable sort: among equal probabilities the lowest id comes first, as in argmax, so a
        # vanishing top_p is exactly greedy
        probs, order = scaled.softmax(-1).sort(dim=-1, descending=True, stable=True)
        before = probs.cumsum(-1) - probs  # (B, V) mass of the likelier symbols; 0 for the first
        outside = torch.zeros_like(before, dtype=torch.bool).scatter(1, order, before >= top_p[:, None])
        scaled = scaled.masked_fill(outside & (top_p < 1)[:, None], -math.inf)
    argmax = F.one_hot(logits.argmax(-1), logits.shape[-1]).bool()
    return torch.where(greedy[:, None], torch.where(argmax, 0.0, -math.inf).to(logits.dtype), scaled)


class TextGenerator:
    """The `seqgen.sampling.Generator` of next-token text models (`seqgen.models.text.TextModel`)."""

    lanes = 1

    def __init__(self, model, vocab: Vocabulary):
        self.model = model.eval()
        self.vocab = vocab
        self.device = model.head.weight.device

    # -- the step protocol
    def initial_state(self, batch: int):
        return self.model.initial_state(batch, self.device)

    def context(self, rows: list[Row]):
        return None

    def options(self, rows: list[Row]) -> tuple[Tensor, Tensor, Tensor]:
        temperature = torch.tensor([r.options[0] for r in rows], dtype=torch.float64, device=self.device)
        top_k = torch.tensor([r.options[1] for r in rows], dtype=torch.long, device=self.device)
        top_p = torch.tensor([r.options[2] for r in rows], dtype=torch.float64, device=self.device)
        return temperature, top_k, top_p

    def prefill(self, inputs: Tensor, state, context):
        return self.model(inputs, state)  # logits (B, T, V), state

    def step(self, x: Tensor, state, context):
        logits, state = self.model(x[:, None], state)
        return logits[:, -1], None, state

    def draw(self, logits: Tensor, aux, options, context, u: Tensor):
        """Inverse-CDF draw from softmax(filtered logits): exact, and one uniform per row."""
        ok = torch.isfinite(logits).all(-1)
        logits = torch.where(ok[:, None], logits, torch.zeros_like(logits)).double()
        probs = filter_logits(logits, *options).softmax(-1)
        cdf = probs.cumsum(-1)
        # right=True: the first symbol whose cdf exceeds u * total, so a zero-probability symbol
        # (masked by top-k or greedy) can never be drawn
        x = torch.searchsorted(cdf, u[:, :1].double() * cdf[:, -1:], right=True)[:, 0]
        return x.clamp_(max=logits.shape[-1] - 1), torch.zeros_like(ok), ok

    def emit(self, x: Tensor) -> list[int]:
        return x.tolist()

    # -- jobs
    def encode(self, text: str) -> Tensor:
        """[start symbol, *text] as a LongTensor; ValueError naming unknown symbols."""
        return torch.as_tensor([start_token(self.vocab), *self.vocab.encode(text)], dtype=torch.long,
                               device=self.device)

    def job(self, prompt: str = "", length: int = 200, temperature: float = 1.0, top_k: int = 0,
            seed: int | None = None, n: int = 1, top_p: float = 1.0, stop: tuple[str, ...] | list[str] = ()) -> Job:
        """n samples of at most ``length`` symbols after ``prompt``, each ending before the first of
        the ``stop`` strings it produces; sample i uses seed + i."""
        ids = self.encode(prompt)
        seed = rng.random_seed() if seed is None else seed
        stops = StopSequences.of(self.vocab, stop)
        rows = [Row(rng.as_seed(seed + i), length, (temperature, top_k, top_p), stop=stops) for i in range(n)]
        return Job(prompt=ids[:-1], first=ids[-1], rows=rows)  # teacher-force all but the last symbol

    def score_job(self, text: str) -> Job:
        ids = self.encode(text)
        if len(ids) < 2:
            raise ValueError("text to score is empty")
        return Job(prompt=ids[:-1], first=ids[-1], rows=[], targets=ids[1:])

    @staticmethod
    def log_prob(logits: Tensor, targets: Tensor) -> float:
        """Sum over t of log softmax(logits[t])[targets[t]] (nats): logits (T, V), targets (T,)."""
        return logits.double().log_softmax(-1).gather(1, targets[:, None]).sum().item()

    def decode(self, row: Row) -> str:
        return self.vocab.decode(row.outputs)


class StopSequences:
    """Stop strings as sequences of symbol ids, checked at the end of a row's outputs every step.

    Character and byte vocabularies have one symbol per character / byte, so matching the ids is
    matching the text; with a word vocabulary a stop string is a sequence of whole words. A stop
    string with a symbol the vocabulary lacks can never be produced and is left out.
    """

    def __init__(self, sequences: list[tuple[int, ...]]):
        self.sequences = sequences

    @classmethod
    def of(cls, vocab: Vocabulary, strings) -> "StopSequences | None":
        sequences = []
        for text in strings:
            try:
                ids = tuple(vocab.encode(text))
            except (ValueError, UnicodeError):
                continue
            if ids:
                sequences.append(ids)
        return cls(sequences) if sequences else None

    def matched(self, outputs: list[int]) -> int:
        """The length of a stop sequence that ``outputs`` ends with (0: none). Checked after every
        symbol, so the first that ends the outputs is the first in the text."""
        for seq in self.sequences:
            if len(outputs) >= len(seq) and tuple(outputs[-len(seq):]) == seq:
                return len(seq)
        return 0

    def pending(self, outputs: list[int]) -> int:
        """The length of the longest tail of ``outputs`` that is a proper prefix of a stop sequence:
        symbols a stream must hold back until they match one or cannot any more."""
        longest = 0
        for seq in self.sequences:
            for k in range(min(len(seq) - 1, len(outputs)), longest, -1):
                if tuple(outputs[-k:]) == seq[:k]:
                    longest = k
                    break
        return longest


def score_summary(log_prob: float, tokens: int) -> dict:
    return {"log_prob": log_prob, "tokens": tokens, "bits_per_token": -log_prob / math.log(2) / tokens,
            "perplexity": math.exp(-log_prob / tokens)}


def generate_batch(model, vocab: Vocabulary, requests: list[GenerateRequest]) -> list[list[str]]:
    """Many requests in one batch (one model call per step); n texts per request."""
    gen = TextGenerator(model, vocab)
    jobs = run(gen, [gen.job(r.prompt, r.length, r.temperature, r.top_k, r.seed, r.n, r.top_p, r.stop)
                     for r in requests])
    return [[gen.decode(row) for row in job.rows] for job in jobs]


def generate(model, vocab: Vocabulary, prompt: str = "", length: int = 200, temperature: float = 1.0,
             top_k: int = 0, seed: int | None = None, n: int = 1, top_p: float = 1.0,
             stop: tuple[str, ...] = ()) -> list[str]:
    return generate_batch(model, vocab, [GenerateRequest(prompt, length, temperature, top_k, seed, n, top_p,
                                                         tuple(stop))])[0]


@torch.inference_mode()
def beam_search(model, vocab: Vocabulary, prompt: str = "", length: int = 50, width: int = 5) -> list[tuple[str, float]]:
    """The ``width`` most probable continuations of ``prompt`` (log-probabilities in nats)."""
    from seqgen.sampling import prime

    gen = TextGenerator(model, vocab)
    job = gen.job(prompt, length, n=1)
    state, _ = prime(gen, job)
    x = job.first[None]
    scores = torch.zeros(1, dtype=torch.float64, device=gen.device)
    seqs = torch.zeros(1, 0, dtype=torch.long, device=gen.device)
    for _ in range(length):
        logits, _, state = gen.step(x, state, None)
        logp = scores[:, None] + logits.double().log_softmax(-1)  # (beams, V)
        top = logp.flatten().topk(min(width, logp.numel()))
        beam, token = top.indices // logp.shape[1], top.indices % logp.shape[1]
        scores, seqs = top.values, torch.cat([seqs[beam], token[:, None]], dim=1)
        state = tree_map(lambda t: t[beam], state)
        x = token
    return [(vocab.decode(s.tolist()), float(v)) for s, v in zip(seqs, scores)]


@torch.inference_mode()
def score_text(model, vocab: Vocabulary, text: str) -> dict:
    """Log-probability of ``text`` after the start symbol, with per-token summaries."""
    from seqgen.sampling import prime

    gen = TextGenerator(model, vocab)
    job = gen.score_job(text)
    _, logits = prime(gen, job)
    return score_summary(gen.log_prob(logits, job.targets), len(job.targets))
