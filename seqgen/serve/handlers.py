"""What each model kind serves: request bodies -> engine jobs, engine events -> answers.

`seqgen.kinds` names each model kind's handler (None: the kind is not served). A handler owns the kind's
`seqgen.sampling.Generator`, checks requests before they reach the engine (a bad prompt is the
client's 400 and never touches a batch), turns the engine's per-row outputs into text or pen
points, and states in the OpenAPI document what the model can read (`openapi_limits`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from seqgen.sampling import Job
from seqgen.serve.errors import NotFound, UnknownSymbols
from seqgen.serve.schemas import MAX_WRITE_CHARS, MIN_WRAP, GenerateBody, ScoreBody, WriteBody, stop_strings


def char_class(chars) -> str:
    """A regex character class matching exactly ``chars`` (JSON Schema ``pattern`` dialect)."""
    return "[" + "".join(re.escape(c) if c not in "-" else r"\-" for c in sorted(chars)) + "]"


class ModelHandler:
    """Shared by every kind: the model summary, info, and the capabilities (route names) it serves."""

    capabilities: frozenset[str] = frozenset()

    def __init__(self, model, loaded, checkpoint_url: str, storage=None):
        self.model = model
        self.loaded = loaded
        self.checkpoint_url = checkpoint_url
        self.storage = storage

    @property
    def kind(self) -> str:
        return self.loaded.config.model.kind

    @property
    def name(self) -> str:
        """The model's name in requests, answers, logs and metrics: its run name."""
        return self.loaded.config.run_name

    def summary(self) -> dict:
        """Short description of the model, returned with every answer."""
        return {"run_name": self.loaded.config.run_name, "kind": self.kind, "checkpoint": self.checkpoint_url,
                "step": self.loaded.progress.get("step")}

    def info(self) -> dict:
        from seqgen.config import to_dict

        return {**self.summary(), "dataset": self.loaded.config.dataset,
                "model_config": to_dict(self.loaded.config.model),
                "parameters": sum(p.numel() for p in self.model.parameters()),
                "device": str(next(self.model.parameters()).device), "routes": sorted(self.capabilities)}

    def openapi_limits(self, schemas: dict) -> None:
        """Add what this model can read to the OpenAPI component ``schemas`` (in place)."""


class TextHandler(ModelHandler):
    """Text models (char / byte / word / bigram vocabularies): ``/generate`` and ``/score``."""

    capabilities = frozenset({"generate", "score"})

    def __init__(self, model, loaded, checkpoint_url: str, storage=None):
        super().__init__(model, loaded, checkpoint_url, storage)
        from seqgen.data.tokenizers import Vocabulary
        from seqgen.text_sampling import TextGenerator

        self.vocab = Vocabulary.from_json(loaded.meta["vocab"])
        self.gen = TextGenerator(model, self.vocab)

    def info(self) -> dict:
        return {**super().info(), "vocab_size": len(self.vocab), "vocab_kind": self.vocab.kind}

    def readable_chars(self) -> set[str] | None:
        """The characters a text may hold, or None when any text is readable (unknown words -> <unk>)."""
        kind, symbols = self.vocab.kind, self.vocab.symbols
        if kind == "char":
            return {s for s in symbols if isinstance(s, str) and len(s) == 1}
        if kind == "byte":
            ascii_ = {chr(b) for b in symbols if b < 128}
            return ascii_ if not all(b in symbols for b in range(128, 256)) else None
        return None if self.vocab.unk is not None else set()

    def openapi_limits(self, schemas: dict) -> None:
        chars = self.readable_chars()
        if not chars:
            return
        pattern = f"^{char_class(chars)}*$"
        for name, field in (("GenerateBody", "prompt"), ("ScoreBody", "text"), ("CompletionBody", "prompt")):
            prop = schemas.get(name, {}).get("properties", {}).get(field)
            if prop is not None:
                for text in _string_schemas(prop):  # the field itself, or a list's items (OpenAI's prompt)
                    text["pattern"] = pattern
                prop["description"] = f"{prop.get('description', '')} (only symbols of the model's vocabulary)".strip()

    def _encode_check(self, text: str) -> None:
        """Raise `UnknownSymbols` (400) naming what the vocabulary lacks."""
        from seqgen.data.tokenizers import split_symbols

        try:
            self.vocab.encode(text)
        except UnicodeError as e:
            raise ValueError(f"text is not valid Unicode: {e}") from None
        except ValueError as e:
            unknown = sorted({str(s) for s in split_symbols(self.vocab.kind, text.encode("utf-8", "surrogatepass"))
                              if s not in self.vocab.index})
            raise UnknownSymbols(unknown, str(e)) from None

    def generate_job(self, body: GenerateBody, seed: int) -> Job:
        self._encode_check(body.prompt)
        return self.gen.job(body.prompt, body.max_tokens or body.length, body.temperature, body.top_k, seed, body.n,
                            body.top_p, stop_strings(body.stop))

    def score_job(self, body: ScoreBody) -> Job:
        self._encode_check(body.text)
        return self.gen.score_job(body.text)

    def decode(self, ids: list[int]) -> str:
        return self.vocab.decode(ids)


def finish_reasons(done: dict) -> list[str]:
    """Per row of a finished job (the engine's "done" event): 'stop' when it ended at a stop
    sequence (or the kind's own stop rule), 'length' when it ran to its limit."""
    return ["stop" if row["stopped"] else "length" for row in done["rows"]]


def _string_schemas(schema: dict) -> list[dict]:
    """The string schemas of a field: itself, its union's members, an array's items."""
    if schema.get("type") == "string":
        return [schema]
    if schema.get("type") == "array":
        return _string_schemas(schema.get("items", {}))
    return [s for member in schema.get("anyOf", []) for s in _string_schemas(member)]


class TextStream:
    """Per-row incremental text: only text that later symbols cannot change is released (a byte
    vocabulary can end a chunk inside a UTF-8 sequence, which decodes as U+FFFD until it completes)."""

    def __init__(self, handler: TextHandler, rows: int):
        self.handler = handler
        self.ids: list[list[int]] = [[] for _ in range(rows)]
        self.sent = [0] * rows

    def add(self, chunk: dict[int, list[int]]) -> dict[int, str]:
        out = {}
        for i, ids in chunk.items():
            self.ids[i] += ids
            text = self.handler.decode(self.ids[i])
            stable = len(text.rstrip("\ufffd")) if self.handler.vocab.kind == "byte" else len(text)
            if stable > self.sent[i]:
                out[i] = text[self.sent[i] : stable]
                self.sent[i] = stable
        return out

    def finish(self) -> dict[int, str]:
        out = {}
        for i, ids in enumerate(self.ids):
            text = self.handler.decode(ids)
            if len(text) > self.sent[i]:
                out[i] = text[self.sent[i] :]
                self.sent[i] = len(text)
        return out

    def texts(self) -> list[str]:
        return [self.handler.decode(ids) for ids in self.ids]


PNG_WIDTH = 1200  # px of a PNG page when the request gives no width


@dataclass
class Page:
    """A /write request made ready to write: its lines and how each is written."""

    lines: list[str]  # every line of the page, blank ones "" (not written)
    written: list[int]  # indices of the lines that are written, in order
    biases: list[float]  # per written line
    candidates: int  # rows per written line (best_of, fewer when the page has many lines)
    prime: tuple[np.ndarray, str] | None  # (offsets in data units, text) of a style or the user's strokes
    changes: list  # `substitute.Change`s made to the text
    seed: int
    look: dict  # how it is drawn (`WriteBody.look`)
    png: bool = False  # also answer a PNG

    def rows_of(self, line: int) -> range:
        """The rows (seeds: page seed + row) of written line ``line``'s candidates."""
        return range(line * self.candidates, (line + 1) * self.candidates)


class HandwritingHandler(ModelHandler):
    """Handwriting synthesis (Graves sec. 5): ``/write`` -> an SVG page + the strokes as JSON."""

    capabilities = frozenset({"write"})

    def __init__(self, model, loaded, checkpoint_url: str, storage=None):
        super().__init__(model, loaded, checkpoint_url, storage)
        from seqgen.handwriting.sampling import POINTS_PER_CHAR, HandwritingGenerator

        self.gen = HandwritingGenerator(model, loaded.meta)
        self.alphabet = self.gen.alphabet
        self.max_points = 1500
        self.max_chars = self.max_points // POINTS_PER_CHAR  # the longest line
        self.line_ids = self._dataset_line_ids()
        self._recognizer = None  # (model, LoadedCheckpoint) of the legibility meter, loaded on first best_of

    def _dataset_line_ids(self) -> list[str]:
        """Line ids of the model's training dataset on the server's storage ([] if it is not there)."""
        from seqgen.handwriting.styles import dataset_line_ids

        if self.storage is None:
            return []
        try:
            return dataset_line_ids(self.storage, self.loaded.config.dataset)
        except (FileNotFoundError, ValueError, KeyError):
            return []

    def info(self) -> dict:
        from seqgen.handwriting.styles import shipped_styles

        return {**super().info(), "alphabet": "".join(self.alphabet.chars[1:]), "max_chars": self.max_chars,
                "max_text_chars": MAX_WRITE_CHARS, "styles": shipped_styles(), "dataset_styles": len(self.line_ids),
                "primes_with_strokes": "ink_per_char" in self.loaded.meta}

    def _text_class(self, extra: str = "") -> str:
        return char_class(self.alphabet.chars[1:])[:-1] + extra + "]"

    def openapi_limits(self, schemas: dict) -> None:
        from seqgen.handwriting.styles import shipped_styles

        body = schemas.get("WriteBody", {})
        props = body.get("properties", {})
        if "wrap" in props:  # the longest line the model can write
            props["wrap"] = {**props["wrap"], "anyOf": [{"type": "integer", "minimum": MIN_WRAP,
                                                         "maximum": self.max_chars}, {"type": "null"}]}
        if self.alphabet.fallback is None:
            # unknown = "error" (or absent): only the alphabet and line breaks; "drop" / "substitute": anything
            body["anyOf"] = [{"properties": {"unknown": {"const": "error"},
                                             "text": {"pattern": f"^{self._text_class(chr(92) + 'r' + chr(92) + 'n')}*$"}}},
                             {"required": ["unknown"], "properties": {"unknown": {"enum": ["drop", "substitute"]}}}]
            prime_text = schemas.get("PrimeBody", {}).get("properties", {}).get("text")
            if prime_text is not None:
                prime_text["pattern"] = f"^{self._text_class()}+$"
        if "ink_per_char" not in self.loaded.meta:  # no training size to scale a drawing to: no prime
            props.pop("prime", None)
        if "style" in props:
            styles = shipped_styles()
            branches = [{"type": "integer", "minimum": styles[0], "maximum": styles[-1]}, {"type": "null"}]
            if self.line_ids:
                branches.insert(1, {"type": "string", "enum": self.line_ids})
            props["style"] = {"anyOf": branches, "description": props["style"].get("description", "")}

    # ------------------------------------------------------------------ a request -> a page to write
    def page(self, body: WriteBody, seed: int, max_rows: int) -> Page:
        """Check a request and cut it into lines (400s here, before any writing): the text fitted to the
        alphabet (``unknown``), wrapped, the hand resolved (style or prime), candidates per line."""
        from seqgen.handwriting.substitute import UnknownCharacters
        from seqgen.handwriting.wrap import page_lines

        width = self.max_chars if body.wrap is None else body.wrap
        if width > self.max_chars:
            raise ValueError(f"wrap={width}: this model writes lines of at most {self.max_chars} characters")
        chars = self.alphabet.chars[1:] if self.alphabet.fallback is None else None
        try:
            lines, changes = page_lines(body.text, chars, body.unknown, width)
        except UnknownCharacters as e:
            raise UnknownSymbols(e.chars, str(e)) from None
        written = [i for i, line in enumerate(lines) if line]
        prime = self._hand(body)
        if body.best_of > 1 and written:
            self.recognizer()  # a server without one refuses at once, before any writing
        candidates = max(1, min(body.best_of, max_rows // max(len(written), 1)))
        return Page(lines, written, body.biases(len(written)), candidates, prime, changes, seed, body.look(),
                    body.png)

    def _hand(self, body: WriteBody) -> tuple[np.ndarray, str] | None:
        """The (offsets, text) to prime with: a shipped style, a dataset line, the user's strokes, or None."""
        from seqgen.handwriting.styles import UnknownStyle, resolve_style

        if body.prime is not None:
            from seqgen.handwriting.prime import prime_from_points

            if self.alphabet.fallback is None and (bad := self.alphabet.unknown_chars(body.prime.text)):
                raise UnknownSymbols(sorted(bad), f"the prime's text has characters the model cannot write: {sorted(bad)}")
            offsets, text, _ = prime_from_points(body.prime.strokes, body.prime.text, self.loaded.meta)
            return offsets, text
        if body.style is None:
            return None
        try:
            return resolve_style(str(body.style), self.loaded.meta, self.storage)
        except UnknownStyle as e:
            raise NotFound(str(e)) from None

    def jobs(self, page: Page, max_rows: int) -> list[tuple[list[int], Job]]:
        """The page's engine jobs: as many written lines as fit in ``max_rows`` rows per job, all of a
        job's lines as rows of ONE batch; returns (the written-line numbers, job) in page order."""
        per_job = max(1, max_rows // page.candidates)
        out = []
        for first in range(0, len(page.written), per_job):
            numbers = list(range(first, min(first + per_job, len(page.written))))
            texts = [page.lines[page.written[i]] for i in numbers]
            job = self.gen.page_job(texts, [page.biases[i] for i in numbers], page.seed + first * page.candidates,
                                    page.prime, n=page.candidates, max_points=self.max_points)
            out.append((numbers, job))
        return out

    def recognizer(self):
        """The handwriting recognizer that picks among best_of candidates (the bundled one)."""
        if self._recognizer is None:
            from seqgen.catalog import load_model
            from seqgen.handwriting.legibility import bundled_recognizer

            self._recognizer = load_model(bundled_recognizer())
        return self._recognizer

    def choose(self, text: str, candidates: list[np.ndarray]) -> tuple[int, dict | None]:
        """Which of the written candidates (offsets in data units) to answer, and how it was read:
        the recognizer's best reading, ties to the candidate the synthesis network finds likelier."""
        if len(candidates) == 1:
            return 0, None
        from seqgen.handwriting.legibility import pick, read_candidates

        reader, loaded = self.recognizer()
        texts = [text] * len(candidates)
        cers, readings = read_candidates(candidates, texts, reader, loaded.meta)
        j, _ = pick(cers, self.model, self.loaded.meta, candidates, texts)
        return j, {"reading": readings[j], "cer": cers[j], "candidate": j, "candidates": len(candidates)}

    def written_line(self, page: Page, line: int, candidates: list[np.ndarray]) -> dict:
        """Written line ``line`` of the page from its candidates' offsets: the chosen one, as answered."""
        text = page.lines[page.written[line]]
        chosen, legibility = self.choose(text, candidates)
        offsets = candidates[chosen]
        return {"line": page.written[line], "text": text, "strokes": offsets.round(3).tolist(), "points": len(offsets),
                "seed": page.seed + page.rows_of(line)[chosen], "legibility": legibility, "offsets": offsets}

    def points(self, outputs: list) -> np.ndarray:
        """Network samples (normalised tensors (3,)) -> (T, 3) offsets in data units."""
        from seqgen.handwriting.sampling import denormalise

        return denormalise(torch.stack(outputs), self.loaded.meta) if outputs else np.zeros((0, 3), np.float32)

    def answer(self, page: Page, written: list[dict]) -> dict:
        """The JSON answer of a page (`WriteResponse`, without the model summary)."""
        first = written[0] if written else {"strokes": [], "legibility": None}
        svg = self.svg(page, [w["offsets"] for w in written])
        png = None
        if page.png:
            import base64

            from seqgen.handwriting.render import strokes_svg, svg_png

            look = {**page.look, "width": page.look["width"] or PNG_WIDTH}
            rows = self._rows(page, [w["offsets"] for w in written])
            png = base64.b64encode(svg_png(strokes_svg(rows, **look))).decode()
        return {"svg": svg, "png": png, "strokes": first["strokes"],
                "points": sum(w["points"] for w in written), "seed": page.seed,
                "lines": [{k: v for k, v in w.items() if k != "offsets"} for w in written],
                "changes": [c.as_dict() for c in page.changes], "legibility": first["legibility"]}

    @staticmethod
    def _rows(page: Page, offsets: list[np.ndarray]) -> list[np.ndarray]:
        """Every line of the page: the written ones' offsets where they belong, blank lines empty."""
        rows = [np.zeros((0, 3), np.float32)] * len(page.lines)
        for i, o in zip(page.written, offsets):
            rows[i] = o
        return rows

    def svg(self, page: Page, offsets: list[np.ndarray]) -> str:
        """The page as SVG in the request's style."""
        from seqgen.handwriting.render import strokes_svg

        return strokes_svg(self._rows(page, offsets), **page.look)
