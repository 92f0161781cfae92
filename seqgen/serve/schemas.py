"""The endpoint's request and response bodies, with every limit stated in the OpenAPI schema.

Bodies are strict (``"200"`` is not a length, ``true`` is not a number) and refuse unknown fields.
What a schema cannot say per model (the vocabulary or alphabet a text may use, the longest text a
handwriting model can write, the dataset lines usable as styles) is added to the served OpenAPI
document by the model's handler (`seqgen.serve.handlers`), so a schema-valid request is one the
model can answer.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from seqgen.handwriting.legibility import MAX_BEST_OF
from seqgen.handwriting import DEFAULT_BIAS
from seqgen.rng import MAX_RANDOM_SEED
from seqgen.serve.config import MAX_TIMEOUT_S
from seqgen.text_sampling import TEMPERATURE_FLOOR

MAX_LENGTH = 5000  # symbols generated per sample
MAX_SAMPLES = 16  # samples per request (n)
MAX_PROMPT_CHARS = 10_000
MAX_SCORE_CHARS = 20_000
MAX_TOP_K = 1_000_000
MAX_STOP_STRINGS = 4  # as OpenAI's completions
MAX_STOP_CHARS = 64
MAX_SEED = MAX_RANDOM_SEED  # 2^53 - 1: exact in every JSON parser (float64), JavaScript included
MAX_WRITE_CHARS = 200  # hard bound; the model's own limit (its max points) is usually lower
MAX_BODY_BYTES = 256 * 1024  # well above the largest valid body (20k chars, JSON-escaped)
MIN_TIMEOUT_S = 30.0  # a request's own deadline; shorter ones would turn ordinary work into 504s

_strict = ConfigDict(strict=True, extra="forbid")


def _integral(value):
    """JSON Schema counts 3.0 as an integer: accept it as 3 (2.5, "3" and true stay errors)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Int = Annotated[int, BeforeValidator(_integral)]
# In a union (seed: Seed | None) the bounds must sit on the member, or the JSON schema loses them.
Seed = Annotated[int, Field(ge=0, le=MAX_SEED), BeforeValidator(_integral)]
Length = Annotated[int, Field(ge=1, le=MAX_LENGTH), BeforeValidator(_integral)]
_Seed = Field(None, description="sample i uses seed + i (wrapping at 2^64); null = a random seed, returned in the "
              "answer so the output can be repeated")
_Timeout = Field(None, ge=MIN_TIMEOUT_S, le=MAX_TIMEOUT_S, description="deadline in seconds (null = the server's "
                 "default); past it the answer is 504")
ModelField = Field(None, max_length=256, description="the served model to use, by its run name (GET /info lists "
                   "them); null = the first served model that answers this route")
_Stream = Field(False, description="stream the output as it is drawn")
StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]
Stop = StopString | Annotated[list[StopString], Field(max_length=MAX_STOP_STRINGS)] | None
StopField = Field(None, description=f"up to {MAX_STOP_STRINGS} strings: a sample ends before the first of them it "
                   "produces (one the model's vocabulary cannot spell never ends it)")
TopPField = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False, description="nucleus sampling: draw among the likeliest "
              "symbols whose probabilities sum to top_p (after temperature and top_k); 1 = all, tiny = greedy")


def stop_strings(stop: "str | list[str] | None") -> tuple[str, ...]:
    """The ``stop`` field as a tuple of strings."""
    return () if stop is None else (stop,) if isinstance(stop, str) else tuple(stop)


class GenerateBody(BaseModel):
    """Body of ``POST /generate``."""

    model_config = _strict

    model: str | None = ModelField
    prompt: str = Field("", max_length=MAX_PROMPT_CHARS, description="text to continue (primes the network)")
    length: Int = Field(200, ge=1, le=MAX_LENGTH, description="symbols to generate per sample")
    max_tokens: Length | None = Field(None, description="another name for length (OpenAI's); when given it wins")
    temperature: float = Field(1.0, ge=0.0, le=10.0, allow_inf_nan=False,
                               description=f"softmax temperature; below {TEMPERATURE_FLOOR} (0 included) sampling "
                                           "is greedy (argmax)")
    top_k: Int = Field(0, ge=0, le=MAX_TOP_K, description="sample among the k most likely; 0 = all")
    top_p: float = TopPField
    stop: Stop = StopField
    seed: Seed | None = _Seed
    n: Int = Field(1, ge=1, le=MAX_SAMPLES, description="number of samples")
    stream: bool = Field(False, description="answer text/event-stream: 'chunk' events of new text per sample, "
                                            "then a 'done' event with totals")
    timeout_s: float | None = _Timeout


class ScoreBody(BaseModel):
    """Body of ``POST /score``."""

    model_config = _strict

    model: str | None = ModelField
    text: str = Field(..., min_length=1, max_length=MAX_SCORE_CHARS, description="text to score")
    timeout_s: float | None = _Timeout


class WriteBody(BaseModel):
    """Body of ``POST /write`` (handwriting synthesis models)."""

    model_config = _strict

    text: str = Field(..., min_length=1, max_length=MAX_WRITE_CHARS, description="text to write")
    bias: float = Field(DEFAULT_BIAS, ge=0.0, le=100.0, allow_inf_nan=False,
                        description="probability bias b (eqs. 61-62): 0 = unbiased, larger = neater")
    style: Int | str | None = Field(None, description="priming style: 0-12 (the shipped styles) or a line id of "
                                                      "the model's training dataset on the server's storage")
    seed: Seed | None = _Seed
    stream: bool = Field(False, description="answer application/x-ndjson: {\"points\": [[dx, dy, eos], ...]} "
                                            "lines as the pen moves, then {\"done\": true, ...}")
    best_of: Int = Field(1, ge=1, le=MAX_BEST_OF, description="write this many candidates as rows of one batch and "
                         "answer the one the handwriting recognizer reads best (with stream: the chosen one, once chosen)")
    timeout_s: float | None = _Timeout
    model: str | None = ModelField


class ModelSummary(BaseModel):
    run_name: str
    kind: str
    checkpoint: str
    step: int | None = None


class GenerateResponse(BaseModel):
    samples: list[str]
    finish_reasons: list[Literal["stop", "length"]] = Field(..., description="per sample: 'stop' it ended at a stop "
                                                                            "string, 'length' it ran to its length")
    seed: int = Field(..., description="the seed used (sample i used seed + i)")
    model: ModelSummary


class ScoreResponse(BaseModel):
    log_prob: float = Field(..., description="natural-log probability of the text after the start symbol")
    tokens: int
    bits_per_token: float
    perplexity: float
    model: ModelSummary


class Legibility(BaseModel):
    """How the recognizer read the chosen candidate of a ``best_of`` request."""

    reading: str = Field(..., description="what the handwriting recognizer read")
    cer: float = Field(..., description="character error rate of the reading against the text")
    candidate: int = Field(..., description="which candidate was chosen (it used seed + candidate)")
    candidates: int


class WriteResponse(BaseModel):
    svg: str
    strokes: list[list[float]] = Field(..., description="pen offsets [dx, dy, eos] in data units")
    points: int
    seed: int
    model: ModelSummary
    legibility: Legibility | None = Field(None, description="with best_of > 1: the chosen candidate's reading")


class ErrorBody(BaseModel):
    """Every error answer has this shape."""

    error: str = Field(..., description="machine-readable code, e.g. invalid_request, overloaded")
    message: str = Field(..., description="what went wrong, for a person")
    detail: list[dict] | None = Field(None, description="per-field problems (invalid_request)")
    unknown_symbols: list[str] | None = Field(None, description="symbols the model cannot read (bad_request)")


class Health(BaseModel):
    status: Literal["ok"]
