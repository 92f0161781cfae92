"""What each model kind serves: request bodies -> engine jobs, engine events -> answers.

`seqgen.kinds` names each model kind's handler (None: the kind is not served). A handler owns the kind's
`seqgen.sampling.Generator`, checks requests before they reach the engine (a bad prompt is the
client's 400 and never touches a batch), turns the engine's per-row outputs into text or pen
points, and states in the OpenAPI document what the model can read (`openapi_limits`).
"""

from __future__ import annotations

import re

import numpy as np
import torch

from seqgen.sampling import Job
from seqgen.serve.errors import NotFound, UnknownSymbols
from seqgen.serve.schemas import GenerateBody, ScoreBody, WriteBody, stop_strings


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


class HandwritingHandler(ModelHandler):
    """Handwriting synthesis (Graves sec. 5): ``/write`` -> SVG + the strokes as JSON."""

    capabilities = frozenset({"write"})

    def __init__(self, model, loaded, checkpoint_url: str, storage=None):
        super().__init__(model, loaded, checkpoint_url, storage)
        from seqgen.handwriting.sampling import POINTS_PER_CHAR, HandwritingGenerator

        self.gen = HandwritingGenerator(model, loaded.meta)
        self.alphabet = self.gen.alphabet
        self.max_points = 1500
        self.max_chars = self.max_points // POINTS_PER_CHAR
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
                "styles": shipped_styles(), "dataset_styles": len(self.line_ids)}

    def openapi_limits(self, schemas: dict) -> None:
        from seqgen.handwriting.styles import shipped_styles

        props = schemas.get("WriteBody", {}).get("properties", {})
        if "text" in props:
            props["text"]["maxLength"] = self.max_chars
            if self.alphabet.fallback is None:
                props["text"]["pattern"] = f"^{char_class(self.alphabet.chars[1:])}+$"
        if "style" in props:
            styles = shipped_styles()
            branches = [{"type": "integer", "minimum": styles[0], "maximum": styles[-1]}, {"type": "null"}]
            if self.line_ids:
                branches.insert(1, {"type": "string", "enum": self.line_ids})
            props["style"] = {"anyOf": branches, "description": props["style"].get("description", "")}

    def write_job(self, body: WriteBody, seed: int) -> Job:
        from seqgen.handwriting.styles import UnknownStyle, resolve_style

        if self.alphabet.fallback is None and (bad := self.alphabet.unknown_chars(body.text)):
            raise UnknownSymbols(sorted(bad), f"text has characters the model cannot write: {sorted(bad)}")
        prime = None
        if body.style is not None:
            try:
                prime = resolve_style(str(body.style), self.loaded.meta, self.storage)
            except UnknownStyle as e:
                raise NotFound(str(e)) from None
        if body.best_of > 1:
            self.recognizer()  # a server without one refuses at once, before any writing
        # best_of candidates are the rows of one job: one batch, one priming, seeds seed + i
        return self.gen.job(body.text, body.bias, seed, prime, max_points=self.max_points, n=body.best_of)

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

    def points(self, outputs: list) -> np.ndarray:
        """Network samples (normalised tensors (3,)) -> (T, 3) offsets in data units."""
        from seqgen.handwriting.sampling import denormalise

        return denormalise(torch.stack(outputs), self.loaded.meta) if outputs else np.zeros((0, 3), np.float32)

    @staticmethod
    def svg(offsets: np.ndarray) -> str:
        from seqgen.handwriting.render import strokes_svg

        return strokes_svg([offsets])

