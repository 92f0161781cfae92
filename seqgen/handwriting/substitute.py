"""Every character a user types: what to do with those the model's alphabet lacks.

``unknown="error"`` refuses the text (naming the characters), ``"drop"`` leaves them out, and
``"substitute"`` writes the nearest characters the alphabet has, trying in order:

1. `TABLE`: typographic punctuation to its ASCII form (quotes, dashes, ellipsis, spaces), symbols
   to words or look-alikes (``&`` -> ``and``, ``@`` -> ``at``, ``{`` -> ``(``), ligatures spelled out;
2. the other case of a letter (IAM-OnDB has no capital ``Z``: ``Z`` -> ``z``);
3. the letter without its accents (Unicode NFKD without combining marks: ``é`` -> ``e``, ``Ž`` -> ``Z``,
   then step 2 if the base letter is missing too);
4. nothing: a character with no writable substitute is dropped.

A replacement is used only if every one of its characters is in the alphabet. Line breaks are not
characters of a line (`seqgen.handwriting.wrap`) and are kept. Every change is reported, with its
position in the original text.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

UNKNOWN = ("error", "drop", "substitute")
LINE_BREAKS = "\r\n"

TABLE: dict[str, tuple[str, ...]] = {
    **dict.fromkeys("\u2018\u2019\u201a\u201b\u2032\u00b4`", ("'",)),  # single quotes, prime, accents
    **dict.fromkeys("\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb", ('"', "'")),  # double quotes, guillemets
    **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212", ("-",)),  # hyphens, dashes, minus
    **dict.fromkeys("\t\u00a0\u2002\u2003\u2009\u202f", (" ",)),  # tab and typographic spaces
    "\u2026": ("...", "."),  # ellipsis
    "&": ("and",), "@": ("at",), "+": ("plus",), "%": ("percent",), "=": ("equals",), "#": ("no.",),
    "$": ("S",), "\u20ac": ("EUR",), "\u00a3": ("L",),
    "{": ("(", "["), "}": (")", "]"), "<": ("(",), ">": (")",), "[": ("(",), "]": (")",),
    "/": ("-",), "\\": ("-",), "|": ("I", "l"), "_": ("-",), "*": ("'",), "~": ("-",), "^": ("'",),
    "\u00df": ("ss",), "\u00e6": ("ae",), "\u00c6": ("AE", "Ae", "ae"), "\u0153": ("oe",), "\u0152": ("OE", "Oe", "oe"),
    "\u00f8": ("o",), "\u00d8": ("O", "o"), "\u0142": ("l",), "\u0141": ("L", "l"), "\u0111": ("d",), "\u0110": ("D", "d"),
    "\u00b0": ("o",), "\u00d7": ("x",), "\u2022": ("-", "."), "\u00b7": (".",),
}


@dataclass(frozen=True)
class Change:
    """One character of the text that is not written as typed: ``to`` is "" when it was dropped."""

    at: int  # index in the original text
    char: str
    to: str

    def as_dict(self) -> dict:
        return {"at": self.at, "char": self.char, "to": self.to}


def _base(c: str) -> str:
    """The letter without its combining marks (NFKD), e.g. 'é' -> 'e', 'ﬁ' -> 'fi'."""
    return "".join(ch for ch in unicodedata.normalize("NFKD", c) if not unicodedata.combining(ch))


def candidates(c: str) -> list[str]:
    """Replacements to try for ``c``, nearest first (steps 1-3 of the module docstring)."""
    out = list(TABLE.get(c, ()))
    out += [c.swapcase()] if c.swapcase() != c else []
    base = _base(c)
    if base and base != c:
        out += [base, base.swapcase()]
    return out


def fit_to_alphabet(text: str, chars, unknown: str = "error") -> tuple[str, list[Change]]:
    """(the text to write, the changes made) for a text and the characters the model can write.

    ``unknown``: "error" (ValueError naming the unknown characters), "drop" or "substitute"."""
    if unknown not in UNKNOWN:
        raise ValueError(f"unknown must be one of {', '.join(UNKNOWN)}, got {unknown!r}")
    known = set(chars) | set(LINE_BREAKS)
    out, changes = [], []
    for i, c in enumerate(text):
        if c in known:
            out.append(c)
            continue
        to = ""
        if unknown == "substitute":
            to = next((r for r in candidates(c) if r and all(ch in known for ch in r)), "")
        out.append(to)
        changes.append(Change(i, c, to))
    if unknown == "error" and changes:
        raise UnknownCharacters(sorted({ch.char for ch in changes}))
    return "".join(out), changes


class UnknownCharacters(ValueError):
    """A text holds characters the model cannot write (``unknown="error"``)."""

    def __init__(self, chars: list[str]):
        super().__init__(f"text has characters the model cannot write: {chars} (unknown=\"substitute\" writes the "
                         f"nearest ones it can, unknown=\"drop\" leaves them out)")
        self.chars = chars
