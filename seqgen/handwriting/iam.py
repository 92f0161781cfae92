"""IAM-OnDB in its original layout -> pen-offset sequences (Graves sec. 4.2), plus text alphabets.

    <root>/ascii/<grp>/<form-dir>/<form>.txt               OCR: ... CSR: one line of text per line
    <root>/lineStrokes/<grp>/<form-dir>/<form>-NN.xml      StrokeSet/Stroke/Point x y time

CSR line k (1-based) pairs with ``<form>-NN.xml`` for NN = k. A point sequence becomes the
(T, 3) rows x_t = (dx, dy, eos) of sec. 4: eos = 1 on the last point of a ``<Stroke>`` (the pen
lifts after it). Coordinates stay in whiteboard units with y growing *downward* (the sjvasquez
styles have y up: negate dy to mix the two). Normalising offsets to mean 0 / std 1 is left to the
dataset code, which owns the training-set statistics.

The root is a local path or any fsspec URL (s3://, gs://, memory://); the files of a form are
named by strings that fsspec opens (plain paths for a local root, URLs otherwise).

Bad input never raises out of `load_forms` and is never dropped silently: every skipped form or
line is listed, with the reason, in the returned `SkipReport`. Pure Python + numpy, no Ray.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import re
import string
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Sequence

import fsspec
import numpy as np
from fsspec.core import url_to_fs

PathLike = str | os.PathLike


class HandwritingFormatError(ValueError):
    """A handwriting file that cannot be used: ``"<file>: <reason>"``."""

    def __init__(self, file, reason: str):
        self.file, self.reason = str(file), reason
        super().__init__(f"{self.file}: {reason}")


# ----------------------------------------------------------------------------- readers


def read_line_strokes(path_or_fileobj: PathLike | IO[bytes]) -> list[np.ndarray]:
    """Parse one lineStrokes XML (ISO-8859-1, declared in the file) into absolute coordinates.

    Returns one float64 array (n_i, 2) of (x, y) per non-empty ``<Stroke>``, in file order.
    ``time`` is ignored (it is not monotonic in every file). Raises `HandwritingFormatError`
    on malformed XML, a point without numeric x/y, or no points at all.
    """
    src = path_or_fileobj
    if isinstance(src, (str, os.PathLike)):
        with fsspec.open(str(src), "rb") as f:
            return read_line_strokes(_Named(f.read(), str(src)))
    name = getattr(src, "name", "<stream>")
    try:
        root = ET.parse(src).getroot()
        strokes = [
            np.array([(float(p.get("x")), float(p.get("y"))) for p in s.iter("Point")], dtype=np.float64)
            for s in root.iter("Stroke")
        ]
    except ET.ParseError as e:
        raise HandwritingFormatError(name, f"unreadable XML: {e}") from None
    except (TypeError, ValueError) as e:  # float(None): missing attribute; float('abc')
        raise HandwritingFormatError(name, f"unreadable XML: bad Point coordinates ({e})") from None
    strokes = [s.reshape(-1, 2) for s in strokes if len(s)]
    if not strokes:
        raise HandwritingFormatError(name, "no strokes: no StrokeSet/Stroke/Point in the file")
    return strokes


class _Named(io.BytesIO):
    """File bytes that remember the file's name, for error messages."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.name = name


def read_transcription(path: PathLike) -> list[str]:
    """The non-blank lines after ``CSR:`` (CRLF or LF; surrounding whitespace stripped)."""
    with fsspec.open(str(path), "rb") as f:
        lines = f.read().decode("latin-1").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "CSR:")
    except StopIteration:
        raise HandwritingFormatError(path, "no 'CSR:' line") from None
    return [s for s in (line.strip() for line in lines[start + 1 :]) if s]


@dataclass(frozen=True)
class FormFiles:
    """One form: its transcription (None if missing) and its line XMLs sorted by line number NN."""

    form_id: str
    transcription: str | None
    lines: tuple[str, ...] = ()


_LINE_FILE = re.compile(r"^(?P<form>.+)-(?P<nn>\d+)$")


def _stem(path: str) -> str:
    return posixpath.splitext(posixpath.basename(str(path)))[0]


def _line_key(path: str) -> tuple[str, int]:
    m = _LINE_FILE.match(_stem(path))
    return (m["form"], int(m["nn"])) if m else (_stem(path), 0)


def list_files(root: PathLike, subdir: str, suffix: str, detail: bool = False) -> dict[str, int] | list[str]:
    """Files under ``<root>/<subdir>`` ending in ``suffix``, named ``<root>/<relative path>`` (openable by
    fsspec whatever ``root`` is), sorted; with ``detail`` a dict name -> size in bytes."""
    root = str(root).rstrip("/")
    fs, base = url_to_fs(root)
    base = base.rstrip("/")
    top = f"{base}/{subdir}"
    found = fs.find(top, detail=True) if fs.isdir(top) else {}
    out = {f"{root}/{p[len(base) + 1:]}": info.get("size") for p, info in sorted(found.items()) if p.endswith(suffix)}
    return out if detail else list(out)


def discover_forms(root: PathLike) -> list[FormFiles]:
    """Pair ``ascii/**/<form>.txt`` with ``lineStrokes/**/<form>-NN.xml``, sorted by form id.

    Every form found in either tree is returned (``transcription`` None or ``lines`` empty when one
    side is missing) so that `load_forms` can report it instead of losing it.
    """
    texts = {_stem(p): p for p in list_files(root, "ascii", ".txt")}
    lines: dict[str, list[str]] = defaultdict(list)
    for p in list_files(root, "lineStrokes", ".xml"):
        lines[_line_key(p)[0]].append(p)
    return [
        FormFiles(f, texts.get(f), tuple(sorted(lines.get(f, ()), key=lambda p: (_line_key(p)[1], posixpath.basename(p)))))
        for f in sorted(texts.keys() | lines.keys())
    ]


# ----------------------------------------------------------------------------- strokes <-> offsets


def _median_step(xy: np.ndarray, pen_down: np.ndarray) -> float:
    """s_bar: median non-zero step length, over pen-down steps if there are any."""
    d = np.hypot(xy[:, 0], xy[:, 1])
    for sel in (pen_down & (d > 0), d > 0):
        if sel.any():
            return float(np.median(d[sel]))
    return 1.0


def strokes_to_offsets(
    strokes: Sequence[np.ndarray], max_step: float | None = 150.0, gap_factor: float | None = 4.0
) -> np.ndarray:
    """Absolute strokes [(n_i, 2)] -> offsets x (T, 3) float32 rows (dx, dy, eos)   (sec. 4.2).

    Row 0 is (0, 0, eos_0): the first point is the origin, so `offsets_to_strokes` returns
    coordinates relative to it; the row doubles as the near-zero first input x_1 of sec. 2 and has
    the layout of the sjvasquez styles (whose row 0 is (0, 0, 1)). Row t > 0 is point t minus
    point t-1; eos_t = 1 on the last point of each stroke, so step t is a pen-up move iff
    eos_{t-1} = 1. Thresholds are in units of s_bar, the line's median non-zero pen-down step
    (about 20 whiteboard units in IAM-OnDB, 1 in the sjvasquez styles), so they are scale-free:

    1. outliers: any step longer than ``max_step * s_bar`` is dropped (the rest of the line is
       joined on; a dropped row's eos moves to the previous row). A one-point spike loses both
       of its steps. The longest real step in the shared subset is ~114 s_bar (a pen-up move past
       a delayed stroke), hence 150: nothing there is dropped, a sensor glitch would be.
    2. missing readings: a pen-down step longer than ``gap_factor * s_bar`` is split into
       ceil(d / s_bar) equal steps (linear interpolation). In the data ordinary steps span one
       sample period (~0.01 s) and steps over 4 s_bar a median of 3-4 (dropped samples); they are
       ~0.2% of the steps and add ~1% points.

    Either threshold set to None disables it; with both None the conversion is exactly invertible.
    """
    xy = np.concatenate([np.asarray(s, np.float64).reshape(-1, 2) for s in strokes] or [np.empty((0, 2))])
    if not len(xy):
        raise ValueError("strokes_to_offsets: no points")
    eos = np.zeros(len(xy))
    eos[np.cumsum([len(s) for s in strokes if len(s)]) - 1] = 1.0
    o = np.column_stack([np.diff(xy, axis=0, prepend=xy[:1]), eos])
    pen_down = np.r_[False, eos[:-1] == 0]
    s_bar = _median_step(o[:, :2], pen_down)
    d = np.hypot(o[:, 0], o[:, 1])
    if max_step is not None:  # 1. outliers
        keep = np.flatnonzero((d <= max_step * s_bar) | (np.arange(len(o)) == 0))
        eos = np.maximum.reduceat(eos, keep)  # a dropped row's pen lift moves to the kept row before it
        o, d = np.column_stack([o[keep, :2], eos]), d[keep]
        pen_down = np.r_[False, eos[:-1] == 0]
    if gap_factor is not None:  # 2. missing readings
        n = np.where(pen_down & (d > gap_factor * s_bar), np.ceil(d / s_bar), 1).astype(np.int64)
        o = np.repeat(np.column_stack([o[:, :2] / n[:, None], np.zeros_like(eos)]), n, axis=0)
        o[np.cumsum(n) - 1, 2] = eos  # only the last of the n new steps keeps the row's eos
    return o.astype(np.float32)


def offsets_to_strokes(offsets: np.ndarray) -> list[np.ndarray]:
    """Inverse of `strokes_to_offsets`: (T, 3) -> [(n_i, 2) float64], coordinates = cumsum of (dx, dy),
    split after every row with eos > 0.5 (trailing rows without a final eos form a last stroke)."""
    offsets = np.asarray(offsets)
    xy = np.cumsum(offsets[:, :2], axis=0, dtype=np.float64)
    ends = np.flatnonzero(offsets[:, 2] > 0.5) + 1
    return [s for s in np.split(xy, ends) if len(s)]


# ----------------------------------------------------------------------------- dataset


@dataclass
class LineRecord:
    """One handwritten line: ``strokes`` is the (T, 3) float32 offset array of `strokes_to_offsets`."""

    form_id: str
    line_id: str  # e.g. 'a01-000u-01'
    text: str
    strokes: np.ndarray


@dataclass
class SkipReport:
    """Everything `load_forms` left out: ``skipped`` holds (file, reason); reasons read 'kind: detail'."""

    skipped: list[tuple[str, str]] = field(default_factory=list)

    def add(self, file, reason: str) -> None:
        self.skipped.append((str(file), reason))

    def __len__(self) -> int:
        return len(self.skipped)

    def summary(self, max_files: int = 5) -> str:
        """'skipped N file(s)' then, per kind of reason, its count and the first files."""
        if not self.skipped:
            return "skipped 0 files"
        groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for file, reason in self.skipped:
            kind, _, detail = reason.partition(":")
            groups[kind].append((file, detail.strip()))
        out = [f"skipped {len(self.skipped)} file(s):"]
        for kind, items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            shown = ", ".join(f"{Path(f).name} ({d})" if d else Path(f).name for f, d in items[:max_files])
            more = f", ... (+{len(items) - max_files} more)" if len(items) > max_files else ""
            out.append(f"  {kind} [{len(items)}]: {shown}{more}")
        return "\n".join(out)


PLACEHOLDER = re.compile(r"%{3,}")  # e.g. a08-551z: 'bone %%%%%%%%%%% pinned.'


def load_forms(
    root: PathLike, forms: Iterable[str] | None = None, **offset_kw
) -> tuple[list[LineRecord], SkipReport]:
    """Read forms (all, or the given form ids) into `LineRecord`s, in form/line order.

    Whole forms are skipped when their text or strokes are missing, the transcription is
    unreadable, or the CSR line count differs from the XML file count (or the files are not
    numbered 01..n), since the pairing is then unknown. Single lines are skipped for placeholder
    text (``%%%``), unreadable XML or no strokes. ``offset_kw`` goes to `strokes_to_offsets`.
    """
    report, records = SkipReport(), []
    found = discover_forms(root)
    if forms is not None:
        wanted = list(dict.fromkeys(forms))
        by_id = {f.form_id: f for f in found}
        for f in wanted:
            if f not in by_id:
                report.add(f"{str(root).rstrip('/')}/{f}", "not found: no ascii or lineStrokes files for this form id")
        found = [by_id[f] for f in wanted if f in by_id]
    for form in found:
        if form.transcription is None:
            n = len(form.lines)
            report.add(form.lines[0], f"no transcription: {n} XML file(s) without ascii/{form.form_id}.txt")
            continue
        if not form.lines:
            report.add(form.transcription, "no lineStrokes: no XML files for this form")
            continue
        try:
            texts = read_transcription(form.transcription)
        except (HandwritingFormatError, OSError, UnicodeError) as e:
            report.add(form.transcription, f"unreadable transcription: {getattr(e, 'reason', e)}")
            continue
        if len(texts) != len(form.lines):
            report.add(form.transcription, f"count mismatch: {len(texts)} CSR lines, {len(form.lines)} XML files")
            continue
        numbers = [_line_key(p)[1] for p in form.lines]
        if numbers != list(range(1, len(numbers) + 1)):
            report.add(form.transcription, f"line numbering: XML files numbered {numbers}, expected 1..{len(numbers)}")
            continue
        for text, path in zip(texts, form.lines):
            if PLACEHOLDER.search(text):
                report.add(path, f"placeholder text: {text!r}")
                continue
            try:
                offsets = strokes_to_offsets(read_line_strokes(path), **offset_kw)
            except HandwritingFormatError as e:
                report.add(path, e.reason)
                continue
            except OSError as e:
                report.add(path, f"unreadable XML: {e}")
                continue
            records.append(LineRecord(form.form_id, _stem(path), text, offsets))
    return records, report


# ----------------------------------------------------------------------------- alphabets

END = "\x00"  # index 0 in every alphabet: the dummy end/pad character c_{U+1} of the stop rule (sec. 5)


class Alphabet:
    """Characters <-> class indices for the one-hot text c_u (sec. 5). ``chars[0]`` is always `END`.

    ``fallback``: the character whose class absorbs any character not in ``chars``
    (None: such characters make `encode` raise ``KeyError``).
    """

    def __init__(self, chars: Sequence[str], fallback: str | None = None):
        self.chars = list(chars)
        if not self.chars or self.chars[0] != END or len(set(self.chars)) != len(self.chars):
            raise ValueError("chars must be distinct and start with the END dummy '\\x00'")
        if fallback is not None and fallback not in self.chars[1:]:
            raise ValueError(f"fallback {fallback!r} is not one of the characters")
        self.fallback = fallback
        self.index = {c: i for i, c in enumerate(self.chars) if i}
        self._fallback_index = self.index.get(fallback)

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other) -> bool:
        return isinstance(other, Alphabet) and (self.chars, self.fallback) == (other.chars, other.fallback)

    def __repr__(self) -> str:
        return f"Alphabet({len(self)} classes, fallback={self.fallback!r})"

    def unknown_chars(self, text: str) -> list[str]:
        """Sorted distinct characters of ``text`` that are not classes of their own (they map to the
        fallback class, or cannot be encoded at all when there is none)."""
        return sorted(set(text) - self.index.keys())

    def encode(self, text: str) -> np.ndarray:
        """text -> (U,) int64 class indices in 1..len-1 (never 0, the END dummy)."""
        if self._fallback_index is None and (bad := self.unknown_chars(text)):
            raise KeyError(f"characters not in the alphabet: {bad!r}")
        return np.array([self.index.get(c, self._fallback_index) for c in text], dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        """Indices -> text; stops at the first 0 (END / padding)."""
        out = []
        for i in np.asarray(ids, dtype=np.int64).ravel().tolist():
            if i == 0:
                break
            out.append(self.chars[i])
        return "".join(out)

    def to_json(self) -> str:
        return json.dumps({"chars": self.chars, "fallback": self.fallback})

    @classmethod
    def from_json(cls, s: str) -> Alphabet:
        d = json.loads(s)
        return cls(d["chars"], d.get("fallback"))


def full_alphabet(texts: Iterable[str]) -> Alphabet:
    """Every distinct character of ``texts`` (sorted) after the END dummy; no fallback."""
    return Alphabet([END, *sorted(set().union(*map(set, texts)) - {END})])


NON_LETTER = "#"  # the representative (and decoded form) of the graves57 non-letter class


def graves57_alphabet() -> Alphabet:
    """The paper's 57 text classes (sec. 5: 80 IAM-OnDB characters reduced to 57 by mapping digits
    and most punctuation to one non-letter class), plus the END dummy at index 0 (58 indices):

        1-26 a-z, 27-52 A-Z, 53 ' ', 54 '.', 55 ',', 56 '"', 57 '#' = non-letter.

    The paper does not list the punctuation it kept; we keep the three most frequent non-letters in
    the IAM-OnDB CSR text ('.' 5125, ',' 2879, '"' 1838 times in the shared forms, next ' 996 and
    - 961), which makes exactly 57. Everything else (digits, ' - ? ! : ; ( ) # % / [ ] + * _ @ &
    and any non-ASCII character) encodes to the non-letter class and decodes as '#'.
    """
    return Alphabet([END, *string.ascii_lowercase, *string.ascii_uppercase, " ", ".", ",", '"', NON_LETTER], NON_LETTER)


# ----------------------------------------------------------------------------- sjvasquez styles


def list_styles(styles_dir: PathLike) -> list[int]:
    """Style numbers N having both ``style-N-strokes.npy`` and ``style-N-chars.npy``, sorted."""
    d = Path(styles_dir)
    found = (re.fullmatch(r"style-(\d+)-strokes\.npy", p.name) for p in d.glob("style-*-strokes.npy"))
    return sorted(int(m[1]) for m in found if m and (d / f"style-{m[1]}-chars.npy").exists())


def load_style(styles_dir: PathLike, n: int) -> tuple[np.ndarray, str]:
    """sjvasquez priming style N -> (offsets (T, 3) float32 rows (dx, dy, eos), its transcription).

    Verbatim: y points up, row 0 is (0, 0, 1), and the last row's eos is 0 in all 13 shared files
    (the last stroke is left open). Loaded without ``allow_pickle``.
    """
    d = Path(styles_dir)
    offsets = np.load(d / f"style-{n}-strokes.npy").astype(np.float32)
    chars = np.load(d / f"style-{n}-chars.npy")
    if offsets.ndim != 2 or offsets.shape[1] != 3 or chars.dtype.kind != "S":
        raise HandwritingFormatError(d / f"style-{n}-*.npy", f"unexpected arrays {offsets.shape}, {chars.dtype}")
    return offsets, chars.item().decode("latin-1")
