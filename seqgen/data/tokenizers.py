"""Tokenisers and vocabularies for the text models.

Four ways to cut text into symbols, each splittable at a chunk boundary so that parallel tasks
can tokenise a corpus piece by piece and agree with a single pass over the whole file:

* ``char``   Unicode code points (char-rnn, Graves' PTB char level).
* ``byte``   raw byte values, any input accepted (Graves' Hutter Wikipedia setting).
* ``word``   whitespace tokens with ``<eos>`` at every line end (PTB; also Mikolov's char-level
             PTB files, whose symbols are space-separated).
* ``bigram`` character pairs within each line, plus ``\\n`` (the textbook chapter).

Where a piece may start without changing the tokens: ``is_boundary`` / ``first_boundary`` (one byte
of context), except mid-line for ``bigram``, where a pair starts only after an even number of
characters since the line start (``line_parity`` carries that count from piece to piece);
``safe_cut`` cuts a buffer that starts at a boundary so that a task can tokenise a chunk of any
size a bounded piece at a time.
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


_SPACE = np.array([b < 128 and chr(b).isspace() for b in range(256)])  # word boundaries follow these


def _is_char_start(arr: np.ndarray) -> np.ndarray:
    return (arr & 0xC0) != 0x80  # not a UTF-8 continuation byte


def first_boundary(kind: str, prev: int | None, block: bytes) -> int:
    """The first i with ``is_boundary(kind, block[i-1] or prev, block[i])``; ``len(block)`` if none
    (vectorised: a scan costs a few ns per byte, so a long run without boundaries is cheap)."""
    if prev is None or kind == "byte" or not block:
        return 0
    arr = np.frombuffer(block, np.uint8)
    if kind == "char":
        hits = np.flatnonzero(_is_char_start(arr))
    elif kind in ("word", "bigram"):
        before = np.concatenate(([prev], arr[:-1])).astype(np.uint8)
        hits = np.flatnonzero(_SPACE[before] if kind == "word" else before == 0x0A)
    else:
        raise ValueError(f"unknown tokenizer {kind!r} (valid: {', '.join(KINDS)})")
    return int(hits[0]) if len(hits) else len(block)


def _utf8_length(lead: int) -> int:
    return 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4 if lead >> 3 == 0b11110 else 1


def _char_starts(buf: bytes, base: int = 0) -> np.ndarray:
    """Positions of the UTF-8 character starts in ``buf[base:]`` (as positions in ``buf``)."""
    return np.flatnonzero(_is_char_start(np.frombuffer(buf, np.uint8, offset=base))) + base


def _complete(buf: bytes, starts: np.ndarray) -> int:
    """How many of the characters starting at ``starts`` end inside ``buf`` (all but maybe the last)."""
    if len(starts) and starts[-1] + _utf8_length(buf[starts[-1]]) > len(buf):
        return len(starts) - 1
    return len(starts)


def safe_cut(kind: str, buf: bytes) -> int:
    """The largest q such that ``buf[:q]`` tokenises alone as it does inside ``buf`` + what follows,
    for a ``buf`` that starts at a boundary (for ``bigram``: at an even number of characters since
    its line started). Tokenising a stream as ``buf[:q]``, then ``buf[q:]`` + the next bytes, ...
    gives the symbols of the whole stream."""
    if kind == "byte" or not buf:
        return len(buf)
    if kind == "char":  # the last character, if its bytes continue beyond buf, waits for them
        starts = _char_starts(buf, max(len(buf) - 4, 0))
        return len(buf) if _complete(buf, starts) == len(starts) else int(starts[-1])
    if kind == "word":  # after the last space
        spaces = np.flatnonzero(_SPACE[np.frombuffer(buf, np.uint8)])
        return int(spaces[-1]) + 1 if len(spaces) else 0
    if kind == "bigram":  # an even number of the last line's complete characters
        starts = _char_starts(buf, buf.rfind(b"\n") + 1)
        complete = _complete(buf, starts)
        keep = complete - complete % 2
        return int(starts[keep]) if keep < len(starts) else len(buf)
    raise ValueError(f"unknown tokenizer {kind!r} (valid: {', '.join(KINDS)})")


def line_parity(data: bytes) -> tuple[bool, int]:
    """(a newline occurs, characters after the last one (all characters if none) mod 2): composed
    over consecutive pieces, the parity of the characters since the line start at any byte, i.e.
    whether a bigram pair is open there. Counts character *starts*, so pieces may cut characters."""
    last = data.rfind(b"\n")
    tail = np.frombuffer(data, np.uint8, offset=last + 1)
    return last >= 0, int(np.count_nonzero(_is_char_start(tail))) % 2


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
    preprocessing tasks (lists of symbols were most of a task's time; measured in benchmarks/README.md)."""
    if kind == "byte" or data.isascii():  # ASCII bytes are their code points: no decoding
        return np.frombuffer(data, np.uint8)
    return np.frombuffer(_decode(data, offset, source).encode("utf-32-le"), np.uint32)


def _symbol(kind: str, code: int):
    return code if kind == "byte" else chr(code)


def count_symbols(kind: str, data: bytes, offset: int = 0, source: str = "") -> Counter:
    """Symbol frequencies of one chunk (= ``Counter(split_symbols(...))``)."""
    if kind not in ("char", "byte"):
        return Counter(split_symbols(kind, data, offset, source))
    codes = _codes(kind, data, offset, source)
    if len(codes) and codes.max() < 1 << 16:  # a histogram: no sort, no copy
        counts = np.bincount(codes)
        values = np.flatnonzero(counts)
        counts = counts[values]
    else:
        values, counts = np.unique(codes, return_counts=True)
    return Counter({_symbol(kind, int(v)): int(c) for v, c in zip(values, counts)})


def count_chars(kind: str, data: bytes) -> int:
    """Characters of raw text a chunk holds (for bits-per-character of non-char models); the chunk
    is valid UTF-8 (its tokenising checked that), so its characters are its non-continuation bytes."""
    if kind == "byte" or data.isascii():
        return len(data)
    return int(np.count_nonzero(_is_char_start(np.frombuffer(data, np.uint8))))


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
        """Frequency-ordered for words (cap -> least frequent become ``<unk>``), sorted otherwise;
        bytes are always all 256 values (any input is valid text for a byte model)."""
        if kind != "word":
            symbols = list(range(256)) if kind == "byte" else sorted(counts)
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
        if not len(codes):
            return np.zeros(0, np.int32)
        keys = self._keys()
        if codes.max() < len(self._table):  # one lookup per symbol (-1: not in the vocabulary)
            ids = self._table[codes]
            unknown = np.flatnonzero(ids < 0)
        else:
            ids = np.minimum(np.searchsorted(keys, codes), len(keys) - 1).astype(np.int32)
            unknown = np.flatnonzero(keys[ids] != codes)
        if len(unknown):
            raise ValueError(f"{source}: symbol {_symbol(self.kind, int(codes[unknown[0]]))!r} is not in the vocabulary")
        return ids

    def _keys(self) -> np.ndarray:
        """Code points / byte values of the symbols (sorted, see ``build``), and ``_table``: id by
        code point for codes below 2^16 (built once per vocabulary, 256 KB at most)."""
        if getattr(self, "_sorted_keys", None) is None:
            keys = np.array([s if self.kind == "byte" else ord(s) for s in self.symbols], np.int64)
            table = np.full(min(int(keys.max(initial=0)) + 1, 1 << 16), -1, np.int32)
            small = keys < len(table)
            table[keys[small]] = np.flatnonzero(small)
            self._sorted_keys, self._table = keys, table
        return self._sorted_keys

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
