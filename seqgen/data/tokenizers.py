"""Tokenisers and vocabularies for the text models.

Four ways to cut text into symbols, each splittable at a chunk boundary so that parallel tasks
can tokenise a corpus piece by piece and agree with a single pass over the whole file:

* ``char``   Unicode code points (char-rnn, Graves' PTB char level).
* ``byte``   raw byte values, any input accepted (Graves' Hutter Wikipedia setting).
* ``word``   whitespace tokens with ``<eos>`` at every line end (PTB; also Mikolov's char-level
             PTB files, whose symbols are space-separated).
* ``bigram`` character pairs within each line, plus ``\\n`` (the textbook chapter).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

KINDS = ("char", "byte", "word", "bigram")
EOS = "<eos>"
UNK = "<unk>"


def is_boundary(kind: str, prev: int | None, cur: int) -> bool:
    """May a chunk start at byte ``cur`` (preceded by byte ``prev``)?"""
    if prev is None or kind == "byte":
        return True
    if kind == "char":
        return (cur & 0xC0) != 0x80  # not a UTF-8 continuation byte
    if kind == "word":
        return chr(prev).isspace() if prev < 128 else False
    if kind == "bigram":
        return prev == 0x0A  # bigrams pair characters within a line
    raise ValueError(f"unknown tokenizer {kind!r} (valid: {', '.join(KINDS)})")


def _decode(data: bytes, offset: int, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{source}: invalid UTF-8 at byte offset {offset + e.start} "
            f"(byte 0x{data[e.start]:02x}); use tokenizer 'byte' to accept any bytes"
        ) from None


def split_symbols(kind: str, data: bytes, offset: int = 0, source: str = "") -> list:
    """Cut one chunk of raw bytes into symbols (strings, or ints for ``byte``).

    ``offset`` is the chunk's byte offset in ``source``; it makes decoding errors point at the
    exact byte of the file.
    """
    if kind == "byte":
        return list(data)
    text = _decode(data, offset, source)
    if kind == "char":
        return list(text)
    lines = text.split("\n")
    out: list[str] = []
    for i, line in enumerate(lines):
        if kind == "word":
            out.extend(line.split())
        else:
            out.extend(line[j : j + 2] for j in range(0, len(line), 2))
        if i < len(lines) - 1:  # a newline ends this line (the last piece has none yet)
            out.append(EOS if kind == "word" else "\n")
    return out


def _codes(kind: str, data: bytes, offset: int, source: str) -> np.ndarray:
    """A char / byte chunk as an array of code points / byte values: the vectorised path of the
    preprocessing tasks (4.4x faster end to end than lists of symbols, benchmarks/README.md)."""
    if kind == "byte":
        return np.frombuffer(data, np.uint8)
    return np.frombuffer(_decode(data, offset, source).encode("utf-32-le"), np.uint32)


def _symbol(kind: str, code: int):
    return code if kind == "byte" else chr(code)


def count_symbols(kind: str, data: bytes, offset: int = 0, source: str = "") -> Counter:
    """Symbol frequencies of one chunk (= ``Counter(split_symbols(...))``)."""
    if kind not in ("char", "byte"):
        return Counter(split_symbols(kind, data, offset, source))
    values, counts = np.unique(_codes(kind, data, offset, source), return_counts=True)
    return Counter({_symbol(kind, int(v)): int(c) for v, c in zip(values, counts)})


def count_chars(kind: str, data: bytes) -> int:
    """Characters of raw text a chunk holds (for bits-per-character of non-char models)."""
    return len(data) if kind == "byte" else len(data.decode("utf-8"))


@dataclass
class Vocabulary:
    """Symbol <-> id mapping. Saved in dataset manifests and checkpoints as JSON."""

    kind: str
    symbols: list = field(default_factory=list)
    unk: str | None = None

    def __post_init__(self):
        self.index = {s: i for i, s in enumerate(self.symbols)}

    def __len__(self) -> int:
        return len(self.symbols)

    @classmethod
    def build(cls, kind: str, counts: Counter, max_size: int = 0, needs_unk: bool = False) -> "Vocabulary":
        """Frequency-ordered for words (cap -> least frequent become ``<unk>``), sorted otherwise."""
        if kind != "word":
            symbols = sorted(counts)
            if max_size and len(symbols) > max_size:
                raise ValueError(
                    f"vocabulary of {len(symbols)} {kind} symbols exceeds the cap of {max_size}"
                )
            return cls(kind, symbols)
        by_freq = sorted(counts, key=lambda w: (-counts[w], w))
        words = [w for w in by_freq if w != EOS]
        total = len(words) + 1 + (needs_unk and UNK not in counts)
        if max_size and total > max_size:
            keep = max_size - 2  # room for <eos> and <unk>
            words = ([UNK] if UNK in counts else []) + [w for w in words if w != UNK][:keep]
            needs_unk = True
        unk = UNK if (needs_unk or UNK in counts) else None
        symbols = [EOS] + words + ([UNK] if unk and UNK not in words else [])
        return cls(kind, symbols, unk)

    def encode_symbols(self, symbols: list, source: str = "") -> np.ndarray:
        ids = np.empty(len(symbols), dtype=np.int32)
        unk_id = self.index.get(self.unk, -1) if self.unk else -1
        for i, s in enumerate(symbols):
            j = self.index.get(s, unk_id)
            if j < 0:
                raise ValueError(f"{source}: symbol {s!r} is not in the vocabulary")
            ids[i] = j
        return ids

    def encode_chunk(self, data: bytes, offset: int = 0, source: str = "") -> np.ndarray:
        """Ids of one chunk of raw bytes (= ``encode_symbols(split_symbols(...))``)."""
        if self.kind not in ("char", "byte"):
            return self.encode_symbols(split_symbols(self.kind, data, offset, source), source)
        codes = _codes(self.kind, data, offset, source)
        keys = np.array([s if self.kind == "byte" else ord(s) for s in self.symbols], np.int64)  # sorted (build)
        ids = np.minimum(np.searchsorted(keys, codes), len(keys) - 1)
        unknown = np.flatnonzero(keys[ids] != codes)
        if len(unknown):
            raise ValueError(f"{source}: symbol {_symbol(self.kind, int(codes[unknown[0]]))!r} is not in the vocabulary")
        return ids.astype(np.int32)

    def encode(self, text: str) -> np.ndarray:
        """Encode user text (a prompt, a sentence to score); unknown symbols are errors."""
        data = text.encode("utf-8")
        symbols = split_symbols(self.kind, data, source="text")
        unknown = sorted({repr(s) for s in symbols if s not in self.index}) if not self.unk else []
        if unknown:
            raise ValueError(f"text contains symbols the model has never seen: {', '.join(unknown)}")
        return self.encode_symbols(symbols)

    def decode(self, ids) -> str:
        if self.kind == "byte":
            return bytes(int(self.symbols[i]) for i in ids).decode("utf-8", errors="replace")
        if self.kind == "word":  # words joined by one space, each <eos> ends a line
            lines, line = [], []
            for i in ids:
                s = self.symbols[i]
                if s == EOS:
                    lines.append(" ".join(line) + "\n")
                    line = []
                else:
                    line.append(s)
            return "".join(lines) + " ".join(line)
        return "".join(self.symbols[i] for i in ids)

    def to_json(self) -> dict:
        return {"kind": self.kind, "symbols": self.symbols, "unk": self.unk}

    @classmethod
    def from_json(cls, data: dict) -> "Vocabulary":
        return cls(data["kind"], list(data["symbols"]), data.get("unk"))
