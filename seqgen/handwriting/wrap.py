"""A text -> the lines of a handwritten page: explicit line breaks, then greedy word wrap.

The synthesis network writes one line at a time (sec. 5: its training lines are single lines of
IAM-OnDB), so a paragraph is cut into lines before it is written. Words are wrapped to ``width``
characters; a word longer than a line is split into pieces of ``width``. A blank line (two line
breaks in a row) stays as a blank line of the page. ``\\r\\n`` and ``\\r`` are line breaks too.
"""

from __future__ import annotations


def split_lines(text: str) -> list[str]:
    """The text's own lines (\\n, \\r\\n or \\r), as typed."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def wrap_line(line: str, width: int) -> list[str]:
    """One line -> lines of at most ``width`` characters, words kept whole unless longer than a line;
    runs of spaces collapse to one. A line without words is one blank line."""
    if width < 1:
        raise ValueError(f"wrap width must be at least 1 character, got {width}")
    out, current = [], ""
    for word in line.split():
        while len(word) > width:  # a word longer than a line: split it
            if current:
                out.append(current)
                current = ""
            out.append(word[:width])
            word = word[width:]
        if not current:
            current = word
        elif len(current) + 1 + len(word) <= width:
            current += " " + word
        else:
            out.append(current)
            current = word
    if current or not out:
        out.append(current)
    return out


def wrap_text(text: str, width: int) -> list[str]:
    """Every line of the page, blank ones included (as "")."""
    return [piece for line in split_lines(text) for piece in wrap_line(line, width)]


def page_lines(text: str, chars, unknown: str, width: int) -> tuple[list[str], list]:
    """A text as typed -> (every line of its page, "" for blank ones; the `substitute.Change`s made):
    characters fitted to the model's alphabet ``chars`` (None: it reads anything), then wrapped."""
    from seqgen.handwriting.substitute import fit_to_alphabet

    changes = []
    if chars is not None:
        text, changes = fit_to_alphabet(text, chars, unknown)
    return [line if line.strip() else "" for line in wrap_text(text, width)], changes
