"""The endpoint's request and response bodies, with every limit stated in the OpenAPI schema.

Bodies are strict (``"200"`` is not a length, ``true`` is not a number) and refuse unknown fields.
What a schema cannot say per model (the vocabulary or alphabet a text may use, the longest text a
handwriting model can write, the dataset lines usable as styles) is added to the served OpenAPI
document by the model's handler (`seqgen.serve.handlers`), so a schema-valid request is one the
model can answer.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from seqgen.handwriting.legibility import MAX_BEST_OF
from seqgen.handwriting import DEFAULT_BIAS
from seqgen.handwriting.prime import MAX_COORDINATE, MAX_PRIME_CHARS, MAX_PRIME_POINTS, MIN_PRIME_CHARS, MIN_PRIME_POINTS
from seqgen.rng import MAX_RANDOM_SEED
from seqgen.serve.config import MAX_LENGTH, MAX_TIMEOUT_S
from seqgen.text_sampling import TEMPERATURE_FLOOR

MAX_SAMPLES = 16  # samples per request (n)
MAX_PROMPT_CHARS = 10_000
MAX_SCORE_CHARS = 20_000
MAX_TOP_K = 1_000_000
MAX_STOP_STRINGS = 4  # as OpenAI's completions
MAX_STOP_CHARS = 64
MAX_SEED = MAX_RANDOM_SEED  # 2^53 - 1: exact in every JSON parser (float64), JavaScript included
MAX_WRITE_CHARS = 1000  # a page; each line is at most the model's own limit (its max points)
MIN_WRAP = 10  # characters a line
MAX_PAGE_ROWS = 32  # rows (lines x candidates) written as one batch; more lines are written in turns
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
Bias = Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]
Coordinate = Annotated[float, Field(ge=-MAX_COORDINATE, le=MAX_COORDINATE, allow_inf_nan=False)]
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


class PrimeBody(BaseModel):
    """Your own handwriting to imitate: a line you drew and what it says (`seqgen.handwriting.prime`)."""

    model_config = _strict

    text: str = Field(..., min_length=MIN_PRIME_CHARS, max_length=MAX_PRIME_CHARS,
                      description="what the drawn line says")
    strokes: list[Annotated[list[Coordinate], Field(min_length=3, max_length=3)]] = Field(
        ..., min_length=MIN_PRIME_POINTS, max_length=MAX_PRIME_POINTS,
        description="[[x, y, pen_up], ...]: absolute pen positions in any unit, y growing downwards (as a canvas "
                    "or tablet gives them), pen_up = 1 on the last point of each stroke (> 0.5 counts as 1); at least "
                    f"{MIN_PRIME_POINTS // MAX_PRIME_CHARS} and at most {MAX_PRIME_POINTS // MIN_PRIME_CHARS} points a "
                    "character follow from the limits")


class WriteBody(BaseModel):
    """Body of ``POST /write`` (handwriting synthesis models)."""

    model_config = ConfigDict(**_strict, json_schema_extra={"not": {"required": ["style", "prime"]}})

    text: str = Field(..., min_length=1, max_length=MAX_WRITE_CHARS,
                      description="text to write; line breaks start new lines, long lines are wrapped (wrap)")
    wrap: Annotated[int, Field(ge=MIN_WRAP, le=MAX_WRITE_CHARS), BeforeValidator(_integral)] | None = Field(
        None, description="line width in characters (null = the longest line the model can write); "
                                         "words are kept whole, a word longer than a line is split")
    unknown: Literal["error", "drop", "substitute"] = Field(
        "error", description="characters the model cannot write: refuse the text (400 naming them), leave them "
                             "out, or write the nearest ones it can (the answer lists every change)")
    bias: Bias | Annotated[list[Bias], Field(min_length=1, max_length=MAX_WRITE_CHARS)] = Field(DEFAULT_BIAS, description="probability bias b (eqs. 61-62): 0 = unbiased, larger "
                                     "= neater; a list gives line i the i-th bias (the last one for further lines)")
    style: Int | str | None = Field(None, description="priming style: 0-12 (the shipped styles) or a line id of "
                                                      "the model's training dataset on the server's storage")
    prime: PrimeBody | None = Field(None, description="prime with your own handwriting instead of a style")
    width: Annotated[float, Field(ge=50, le=10_000, allow_inf_nan=False)] | None = Field(
        None, description="the page's width in px (null: 1 data unit = 1 px)")
    stroke_width: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] | None = Field(
        None, description="pen width in px at the page's width (null: 1/40 of a line's height)")
    color: str = Field("#000000", pattern=r"^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$", description="ink colour, #rgb or #rrggbb")
    margin: Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)] | None = Field(
        None, description="px around the writing (null: 1/10 of a line's height)")
    png: bool = Field(False, description="also answer the page as PNG (base64), rasterised from the SVG by resvg "
                                         "(1,200 px wide unless width says otherwise)")
    smooth: bool = Field(True, description="draw strokes as curves through the pen's points (Catmull-Rom) rather "
                                           "than straight segments")
    seed: Seed | None = _Seed
    stream: bool = Field(False, description="answer application/x-ndjson: {\"line\": i, \"points\": [[dx, dy, eos], "
                                            "...]} lines as the pens move, then {\"done\": true, ...}")
    best_of: Int = Field(1, ge=1, le=MAX_BEST_OF, description="write this many candidates of every line as rows of one "
                         "batch and answer the one the handwriting recognizer reads best (with stream: the chosen "
                         f"ones, once chosen); a page writes at most {MAX_PAGE_ROWS} rows at once, so with many lines "
                         "fewer candidates")
    timeout_s: float | None = _Timeout
    model: str | None = ModelField

    @model_validator(mode="after")
    def _one_hand(self):
        if "style" in self.model_fields_set and "prime" in self.model_fields_set:
            raise ValueError("give a style or a prime, not both")
        return self

    def look(self) -> dict:
        """The page's style, as `render.strokes_svg` takes it."""
        return {"width": self.width, "stroke_width": self.stroke_width, "color": self.color, "margin": self.margin,
                "smooth": self.smooth}

    def biases(self, lines: int) -> list[float]:
        """One bias per line."""
        b = self.bias if isinstance(self.bias, list) else [self.bias]
        return [b[min(i, len(b) - 1)] for i in range(lines)]

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


class WrittenLine(BaseModel):
    line: int = Field(..., description="the line's row on the page (blank lines count)")
    text: str = Field(..., description="what this line of the page says")
    strokes: list[list[float]] = Field(..., description="pen offsets [dx, dy, eos] in data units")
    points: int
    seed: int = Field(..., description="the seed of the row that wrote it")
    legibility: Legibility | None = Field(None, description="with best_of > 1: the chosen candidate's reading")


class TextChange(BaseModel):
    at: int = Field(..., description="position in the text as sent")
    char: str
    to: str = Field(..., description="what was written instead (\"\" = left out)")


class WriteResponse(BaseModel):
    svg: str = Field(..., description="the page: every line, left-aligned, evenly spaced")
    strokes: list[list[float]] = Field(..., description="pen offsets [dx, dy, eos] in data units of the first line")
    points: int = Field(..., description="pen points of the whole page")
    seed: int
    lines: list[WrittenLine] = Field(..., description="the page's written lines (blank lines are not written)")
    changes: list[TextChange] = Field(..., description="characters not written as typed (unknown)")
    png: str | None = Field(None, description="with png: the page as a base64 PNG")
    model: ModelSummary
    legibility: Legibility | None = Field(None, description="with best_of > 1: the first line's chosen candidate")


class ErrorBody(BaseModel):
    """Every error answer has this shape."""

    error: str = Field(..., description="machine-readable code, e.g. invalid_request, overloaded")
    message: str = Field(..., description="what went wrong, for a person")
    detail: list[dict] | None = Field(None, description="per-field problems (invalid_request)")
    unknown_symbols: list[str] | None = Field(None, description="symbols the model cannot read (bad_request)")


class Health(BaseModel):
    status: Literal["ok"]
