"""A text -> the lines of a page (wrap) and the characters the model can write (substitute)."""

from __future__ import annotations

import pytest

from seqgen.handwriting.substitute import TABLE, UnknownCharacters, fit_to_alphabet
from seqgen.handwriting.wrap import wrap_line, wrap_text

# the bundled model's alphabet (IAM-OnDB's characters): no Z, no &, @, +, /
ALPHABET = list(" !\"#'(),-.0123456789:;?ABCDEFGHIJKLMNOPQRSTUVWXY[]abcdefghijklmnopqrstuvwxyz")


def test_wrap_keeps_words_whole_and_lines_within_the_width():
    text = "This is a longer sentence that a person might want to write as a note"
    lines = wrap_line(text, 20)
    assert lines == ["This is a longer", "sentence that a", "person might want to", "write as a note"]
    assert all(len(line) <= 20 for line in lines) and " ".join(lines) == text


def test_wrap_splits_a_word_longer_than_a_line_and_keeps_line_breaks_and_blank_lines():
    assert wrap_line("ab supercalifragilistic cd", 10) == ["ab", "supercalif", "ragilistic", "cd"]
    assert wrap_text("line one\nline two", 60) == ["line one", "line two"]
    assert wrap_text("a\r\n\r\nb\rc", 60) == ["a", "", "b", "c"]
    assert wrap_text("  spaced   out  ", 60) == ["spaced out"]
    with pytest.raises(ValueError, match="at least 1"):
        wrap_line("x", 0)


def test_error_names_every_unknown_character():
    with pytest.raises(UnknownCharacters) as e:
        fit_to_alphabet("Zebra @ 10:30 & more", ALPHABET, "error")
    assert e.value.chars == ["&", "@", "Z"]
    assert fit_to_alphabet("fine\ntext", ALPHABET, "error") == ("fine\ntext", [])


def test_drop_and_substitute_list_every_change():
    text, changes = fit_to_alphabet("Zebra @ 10:30 & more", ALPHABET, "substitute")
    assert text == "zebra at 10:30 and more"
    assert [c.as_dict() for c in changes] == [{"at": 0, "char": "Z", "to": "z"}, {"at": 6, "char": "@", "to": "at"},
                                              {"at": 14, "char": "&", "to": "and"}]
    text, changes = fit_to_alphabet("Zebra @ 10:30", ALPHABET, "drop")
    assert text == "ebra  10:30" and [c.to for c in changes] == ["", ""]


@pytest.mark.parametrize("typed, written", [
    ("\u201cQuoted\u201d \u2018it\u2019s\u2019", "\"Quoted\" 'it's'"),  # typographic quotes
    ("a \u2014 b \u2013 c", "a - b - c"),  # dashes
    ("wait\u2026", "wait..."),
    ("caf\u00e9 na\u00efve \u017dupan", "cafe naive zupan"),  # accents; Z is missing, so z
    ("Stra\u00dfe \u00e6on", "Strasse aeon"),
    ("{x} 1/2 \u2603", "(x) 1-2 "),  # a snowman has no substitute: dropped
])
def test_substitution_table(typed, written):
    assert fit_to_alphabet(typed, ALPHABET, "substitute")[0] == written


def test_the_table_only_maps_to_ascii():
    assert all(r.isascii() for rs in TABLE.values() for r in rs)
