"""Tokenisers and vocabularies: round trips, chunk-boundary rule, errors, caps."""

from __future__ import annotations

import random
import uuid
from collections import Counter

import fsspec
import numpy as np
import pytest

from seqgen.data.text import DatasetError, TextSpec, load_split, preprocess_text
from seqgen.data.tokenizers import (EOS, KINDS, UNK, Vocabulary, count_chars, count_symbols, is_boundary,
                                    split_symbols)
from seqgen.storage import Storage

SAMPLE = (
    "naïve — über café, ü\n"
    "the  cat\tsat on the mat.\n"
    "\n"
    "   leading spaces and trailing   \n"
    "odd\n"
    "a-very-long-word-that-spans-many-tiny-chunks 😀 emoji\r\n"
    "end without newline ÿ"
)


def _vocab_for(kind: str, symbols: list) -> Vocabulary:
    return Vocabulary.build(kind, Counter(symbols))


def _roundtrip(kind: str, text: str) -> str:
    symbols = split_symbols(kind, text.encode("utf-8"))
    vocab = _vocab_for(kind, symbols)
    ids = vocab.encode_symbols(symbols)
    assert ids.dtype == np.int32 and len(ids) == len(symbols)
    assert [vocab.symbols[i] for i in ids] == symbols
    return vocab.decode(ids)


# ---------------------------------------------------------------------------------------------
# round trips
def test_char_roundtrip_non_ascii():
    for text in ["naïve — ü", SAMPLE, "日本語\n\tx", "😀a😀"]:
        assert _roundtrip("char", text) == text
    symbols = split_symbols("char", "naïve — ü".encode())
    assert symbols == list("naïve — ü")  # code points, not bytes
    assert count_chars("char", "naïve — ü".encode()) == 9


def test_char_vocab_encode_text():
    vocab = _vocab_for("char", split_symbols("char", SAMPLE.encode()))
    assert vocab.symbols == sorted(set(SAMPLE))
    assert vocab.decode(vocab.encode(SAMPLE)) == SAMPLE
    assert vocab.unk is None


def test_byte_roundtrip_arbitrary_bytes():
    rng = random.Random(0)
    data = bytes(rng.randrange(256) for _ in range(2000)) + b"\xff\xfe\x80\xc3"  # invalid UTF-8
    symbols = split_symbols("byte", data)
    assert symbols == list(data) and all(isinstance(s, int) for s in symbols)
    vocab = _vocab_for("byte", symbols)
    ids = vocab.encode_symbols(symbols)
    assert bytes(vocab.symbols[i] for i in ids) == data  # exact at the byte level
    assert count_chars("byte", data) == len(data)
    # decode() renders text; valid UTF-8 comes back exactly, invalid bytes as U+FFFD
    text = "naïve — ü"
    tv = _vocab_for("byte", split_symbols("byte", text.encode()))
    assert tv.decode(tv.encode(text)) == text
    assert vocab.decode(vocab.encode_symbols([0x61, 0xFF])) == "a\ufffd"
    # JSON round trip keeps int symbols
    again = Vocabulary.from_json(vocab.to_json())
    assert again.symbols == vocab.symbols and again.index == vocab.index


def test_word_eos_and_decode():
    text = "the cat sat\non the mat\n"
    symbols = split_symbols("word", text.encode())
    assert symbols == ["the", "cat", "sat", EOS, "on", "the", "mat", EOS]
    assert _roundtrip("word", text) == text
    assert _roundtrip("word", "a b\n\nc") == "a b\n\nc"  # empty line: consecutive <eos>
    assert _roundtrip("word", "\nx y") == "\nx y"
    # whitespace is normalised: one space between words, none at the line ends
    assert _roundtrip("word", "  a \t b  \n c") == "a b\nc"
    vocab = _vocab_for("word", symbols)
    assert vocab.symbols[0] == EOS
    assert vocab.symbols[1] == "the"  # frequency order
    assert vocab.decode(vocab.encode("the cat")) == "the cat"


def test_bigram_roundtrip():
    text = "abcde\nfg\n\nh"
    symbols = split_symbols("bigram", text.encode())
    assert symbols == ["ab", "cd", "e", "\n", "fg", "\n", "\n", "h"]
    assert _roundtrip("bigram", text) == text
    assert _roundtrip("bigram", SAMPLE) == SAMPLE
    assert split_symbols("bigram", "ü—x".encode()) == ["ü—", "x"]  # pairs of characters, not bytes


def test_empty_chunk_has_no_symbols():
    for kind in KINDS:
        assert split_symbols(kind, b"") == []


# ---------------------------------------------------------------------------------------------
# the chunk boundary rule
def test_is_boundary_rule():
    assert is_boundary("char", None, 0x80)  # file start
    assert is_boundary("char", ord("a"), ord("b"))
    assert not is_boundary("char", 0xC3, 0xBC)  # inside 'ü'
    assert is_boundary("byte", 0xC3, 0xBC)
    assert is_boundary("word", ord(" "), ord("b"))
    assert is_boundary("word", ord("\n"), ord("b"))
    assert not is_boundary("word", ord("a"), ord(" "))
    assert not is_boundary("word", 0xA0, ord("b"))  # non-ASCII bytes never count as space
    assert is_boundary("bigram", ord("\n"), ord("a"))
    assert not is_boundary("bigram", ord(" "), ord("a"))
    with pytest.raises(ValueError, match="unknown tokenizer"):
        is_boundary("nope", 1, 2)


def _snap(kind: str, data: bytes, pos: int) -> int:
    """The module's rule: the first boundary at or after ``pos``."""
    while 0 < pos < len(data) and not is_boundary(kind, data[pos - 1], data[pos]):
        pos += 1
    return pos


@pytest.mark.parametrize("kind", KINDS)
def test_random_snapped_pieces_tokenise_like_the_whole(kind):
    data = (SAMPLE * 3).encode()
    whole = split_symbols(kind, data)
    rng = random.Random(hash(kind) & 0xFFFF)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randrange(1, 40)))
        bounds = [0, *(_snap(kind, data, c) for c in cuts), len(data)]
        pieces = []
        for lo, hi in zip(bounds, bounds[1:]):
            pieces += split_symbols(kind, data[lo:hi], lo)
        assert pieces == whole


def test_unsnapped_cut_would_break_words():
    """Sanity check of the property above: cutting anywhere does change the tokens."""
    data = b"hello world"
    assert split_symbols("word", data[:3]) + split_symbols("word", data[3:]) != split_symbols("word", data)


def _write(url: str, data: bytes) -> None:
    with fsspec.open(url, "wb") as f:
        f.write(data)


def _stream(storage: Storage, manifest: dict, split: str) -> list:
    symbols = manifest["vocab"]["symbols"]
    return [symbols[i] for i in load_split(storage, manifest, split)]


@pytest.mark.parametrize("kind", KINDS)
def test_preprocess_tiny_chunks_equal_one_chunk(kind):
    """Many tiny chunks (each snapped by is_boundary) give the token stream of one big chunk."""
    root = f"memory://tok-{uuid.uuid4().hex}"
    url = f"{root}/in/corpus.txt"
    data = (SAMPLE * 2).encode()
    _write(url, data)
    storage = Storage.from_url(f"{root}/store")
    ref = preprocess_text(storage, "big", TextSpec(kind, {"train": [url]}, chunk_bytes=1 << 20), use_ray=False)
    assert len(ref["splits"]["train"]["shards"]) == 1
    assert _stream(storage, ref, "train") == split_symbols(kind, data)
    for chunk_bytes in (1, 3, 7):
        got = preprocess_text(storage, f"tiny{chunk_bytes}", TextSpec(kind, {"train": [url]}, chunk_bytes=chunk_bytes),
                              use_ray=False)
        assert len(got["splits"]["train"]["shards"]) > 10
        assert got["vocab"] == ref["vocab"]
        assert got["splits"]["train"]["tokens"] == ref["splits"]["train"]["tokens"]
        chars = len(data) if kind == "byte" else len(data.decode())  # bytes are the byte model's characters
        assert got["splits"]["train"]["chars"] == ref["splits"]["train"]["chars"] == chars
        assert _stream(storage, got, "train") == _stream(storage, ref, "train")


@pytest.mark.parametrize("kind", KINDS)
def test_preprocess_tail_splits_independent_of_chunking(kind):
    root = f"memory://tok-{uuid.uuid4().hex}"
    url = f"{root}/in/corpus.txt"
    data = (SAMPLE * 3).encode()
    _write(url, data)
    storage = Storage.from_url(f"{root}/store")
    streams = []
    for chunk_bytes in (1 << 20, 5):
        spec = TextSpec(kind, {"train": [url]}, valid_fraction=0.2, test_fraction=0.15, chunk_bytes=chunk_bytes)
        m = preprocess_text(storage, f"d{chunk_bytes}", spec, use_ray=False)
        streams.append({s: _stream(storage, m, s) for s in ("train", "valid", "test")})
    assert streams[0] == streams[1]
    joined = streams[0]["train"] + streams[0]["valid"] + streams[0]["test"]
    assert all(streams[0][s] for s in ("train", "valid", "test"))
    if kind in ("char", "byte"):  # cutting between symbols never changes them
        assert joined == split_symbols(kind, data)


@pytest.mark.parametrize("kind", KINDS)
def test_vectorised_count_and_encode_equal_the_symbol_lists(kind):
    """count_symbols / encode_chunk (numpy for char and byte) agree with the plain symbol lists."""
    data = (SAMPLE * 3).encode("utf-8") + (b"\x00\xff" if kind == "byte" else b"")
    symbols = split_symbols(kind, data)
    assert count_symbols(kind, data) == Counter(symbols)
    vocab = _vocab_for(kind, symbols)
    ids = vocab.encode_chunk(data)
    assert ids.dtype == np.int32 and np.array_equal(ids, vocab.encode_symbols(symbols))


def test_encode_chunk_names_a_symbol_outside_the_vocabulary():
    vocab = _vocab_for("char", list("abc"))
    with pytest.raises(ValueError, match="f.txt: symbol 'é' is not in the vocabulary"):
        vocab.encode_chunk("abcébz".encode(), source="f.txt")
    with pytest.raises(ValueError, match="f.txt: symbol 255 is not in the vocabulary"):
        Vocabulary("byte", list(b"abc")).encode_chunk(b"ab\xff", source="f.txt")  # (built ones have all 256)
    with pytest.raises(ValueError, match="invalid UTF-8 at byte offset 12"):
        count_symbols("char", b"ab\xff", offset=10, source="f.txt")


# ---------------------------------------------------------------------------------------------
# errors and caps
def test_invalid_utf8_error_names_exact_offset():
    data = "héllo wörld\n".encode() + b"ab\xffcd"
    bad = data.index(b"\xff")
    for kind in ("char", "word", "bigram"):
        with pytest.raises(ValueError, match=f"f.txt: invalid UTF-8 at byte offset {bad + 100} \\(byte 0xff\\)"):
            split_symbols(kind, data, offset=100, source="f.txt")
    assert split_symbols("byte", data)[bad] == 0xFF


@pytest.mark.parametrize("chunk_bytes", [1, 4, 1 << 20])
def test_preprocess_invalid_utf8_reports_file_offset(chunk_bytes):
    root = f"memory://tok-{uuid.uuid4().hex}"
    url = f"{root}/in/bad.txt"
    data = ("ü" * 20 + "x\n" * 10).encode() + b"\xc3(" + b"tail"  # 0xc3 lead byte without continuation
    _write(url, data)
    storage = Storage.from_url(f"{root}/store")
    bad = data.index(b"\xc3(")
    with pytest.raises(DatasetError, match=f"invalid UTF-8 at byte offset {bad} \\(byte 0xc3\\)"):
        preprocess_text(storage, "bad", TextSpec("char", {"train": [url]}, chunk_bytes=chunk_bytes), use_ray=False)
    assert not storage.exists(storage.dataset_dir("bad"))


def test_char_vocab_cap_exceeded():
    with pytest.raises(ValueError, match="vocabulary of 4 char symbols exceeds the cap of 3"):
        Vocabulary.build("char", Counter("abcd"), max_size=3)
    assert len(Vocabulary.build("char", Counter("abcd"), max_size=4)) == 4
    root = f"memory://tok-{uuid.uuid4().hex}"
    _write(f"{root}/in/a.txt", b"abcdefg")
    storage = Storage.from_url(f"{root}/store")
    with pytest.raises(ValueError, match="exceeds the cap of 5"):
        preprocess_text(storage, "capped", TextSpec("char", {"train": [f"{root}/in/a.txt"]}, max_vocab=5), use_ray=False)
    assert not storage.exists(storage.dataset_dir("capped"))


def test_word_cap_maps_rare_words_to_unk():
    counts = Counter({"the": 9, "cat": 5, "sat": 3, "mat": 1, "rug": 1, EOS: 4})
    vocab = Vocabulary.build("word", counts, max_size=5)
    assert vocab.symbols == [EOS, "the", "cat", "sat", UNK]
    assert vocab.unk == UNK and len(vocab) == 5
    ids = vocab.encode_symbols(["the", "mat", "rug", EOS])
    assert [vocab.symbols[i] for i in ids] == ["the", UNK, UNK, EOS]
    assert vocab.decode(vocab.encode("the zebra")) == f"the {UNK}"  # user text maps to <unk> too
    # a corpus that already has <unk> (PTB) keeps it, and the cap is still met exactly
    with_unk = Vocabulary.build("word", counts + Counter({UNK: 2}), max_size=5)
    assert len(with_unk) == 5 and with_unk.unk == UNK and with_unk.symbols[0] == EOS
    assert set(with_unk.symbols) == {EOS, UNK, "the", "cat", "sat"}
    # no cap needed: no <unk>
    assert Vocabulary.build("word", counts).unk is None


def test_word_cap_through_preprocess():
    root = f"memory://tok-{uuid.uuid4().hex}"
    url = f"{root}/in/w.txt"
    _write(url, b"a a a b b c\nd e a b\n")
    storage = Storage.from_url(f"{root}/store")
    m = preprocess_text(storage, "w", TextSpec("word", {"train": [url]}, max_vocab=4), use_ray=False)
    assert m["vocab"]["symbols"] == [EOS, "a", "b", UNK] and m["vocab_size"] == 4
    assert _stream(storage, m, "train") == ["a", "a", "a", "b", "b", UNK, EOS, UNK, UNK, "a", "b", EOS]


def test_word_unseen_held_out_words_get_unk():
    root = f"memory://tok-{uuid.uuid4().hex}"
    _write(f"{root}/in/train.txt", b"a b\n")
    _write(f"{root}/in/valid.txt", b"a z\n")
    storage = Storage.from_url(f"{root}/store")
    spec = TextSpec("word", {"train": [f"{root}/in/train.txt"], "valid": [f"{root}/in/valid.txt"]})
    m = preprocess_text(storage, "w", spec, use_ray=False)
    assert "z" not in m["vocab"]["symbols"] and m["vocab"]["unk"] == UNK  # vocabulary from train only
    assert _stream(storage, m, "valid") == ["a", UNK, EOS]


def test_encode_unknown_symbols_named():
    vocab = _vocab_for("char", list("abc"))
    with pytest.raises(ValueError, match=r"never seen: 'x', 'é'"):
        vocab.encode("abxé")
    with pytest.raises(ValueError, match="symbol 'q' is not in the vocabulary"):
        vocab.encode_symbols(["a", "q"], source="src")
