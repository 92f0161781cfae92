"""Chunk boundaries without rescanning: one long line (no newline) preprocesses in linear work for
every tokenizer, with pieces of bounded size, and gives the tokens of a single pass."""

from __future__ import annotations

import io
import random
import uuid

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from seqgen.data.text import TextSpec, load_split, preprocess_text
from seqgen.data.tokenizers import KINDS, line_parity, safe_cut, split_symbols
from seqgen.storage import Storage

from test_tokenizers import SAMPLE


class CountingMemoryFS(MemoryFileSystem):
    """The memory file system under the protocol ``counting://``, counting every byte read and
    the largest single read (a real fsspec file system: the code under test cannot tell)."""

    protocol = ("counting",)
    bytes_read = 0
    largest_read = 0

    def _open(self, path, mode="rb", **kwargs):
        f = super()._open(path, mode, **kwargs)
        if "r" not in mode:
            return f
        fs = type(self)

        class Counting(io.BytesIO):
            def read(self, n=-1):
                data = super().read(n)
                fs.bytes_read += len(data)
                fs.largest_read = max(fs.largest_read, len(data))
                return data

        return Counting(f.getvalue())


fsspec.register_implementation("counting", CountingMemoryFS, clobber=True)


def _one_line(size: int, kind: str) -> bytes:
    """Words of ASCII and non-ASCII letters separated by spaces, no newline (random bytes for byte)."""
    rng = random.Random(size)
    if kind == "byte":
        return rng.randbytes(size)
    letters = "abcdefghijklmnopqrstuvwxyzäöüß—"
    vocabulary = ["".join(rng.choice(letters) for _ in range(rng.randrange(1, 9))) for _ in range(300)]
    words, n = [], 0
    while n < size:
        words.append(rng.choice(vocabulary))
        n += len(words[-1].encode()) + 1
    return " ".join(words).encode()


@pytest.mark.parametrize("kind", KINDS)
def test_single_line_corpus_reads_linear_bytes_and_tokenises_like_one_pass(kind):
    data = _one_line(1 << 20, kind)
    root = f"counting://line-{uuid.uuid4().hex}"
    with fsspec.open(f"{root}/in/line.txt", "wb") as f:
        f.write(data)
    storage = Storage.from_url(f"memory://line-{uuid.uuid4().hex}/store")
    chunk, read = 16 << 10, 4 << 10  # 64 chunks; a task reads 4 KB at a time
    spec = TextSpec(kind, {"train": [f"{root}/in/line.txt"]}, valid_fraction=0.05, test_fraction=0.05,
                    chunk_bytes=chunk, read_bytes=read)
    CountingMemoryFS.bytes_read = CountingMemoryFS.largest_read = 0
    m = preprocess_text(storage, "line", spec, use_ray=False)
    # every pass reads the corpus about once (bigram has a third pass for its pair parity); a
    # rescan of the line per chunk would read it ~32 times per pass
    passes = 3 if kind == "bigram" else 2
    assert CountingMemoryFS.bytes_read <= passes * len(data) * 1.05
    assert CountingMemoryFS.largest_read <= max(read, 1 << 16)  # pieces (or boundary scans) of bounded size
    symbols = m["vocab"]["symbols"]
    stream = [symbols[i] for s in ("train", "valid", "test") for i in load_split(storage, m, s)]
    assert stream == split_symbols(kind, data)
    assert all(m["splits"][s]["tokens"] for s in ("train", "valid", "test"))
    if kind != "word":  # one 1 MB word would be one token; words here are short
        shards = [sh["tokens"] for s in m["splits"].values() for sh in s["shards"]]
        assert sum(1 for n in shards if n) > 50  # the line is spread over the chunks, not owned by one


@pytest.mark.parametrize("kind", KINDS)
def test_safe_cut_pieces_tokenise_like_the_whole(kind):
    data = (SAMPLE * 3).encode() + _one_line(3000, kind)
    whole = split_symbols(kind, data)
    rng = random.Random(7)
    for _ in range(100):
        pos, carry, got = 0, b"", []
        while pos < len(data):
            n = rng.randrange(1, 16)
            buf = carry + data[pos : pos + n]
            pos += n
            cut = len(buf) if pos >= len(data) else safe_cut(kind, buf)
            got += split_symbols(kind, buf[:cut])
            carry = buf[cut:]
        assert got == whole


def test_line_parity_composes_over_pieces():
    data = "ab\ncdé\n\nfghü—x".encode() * 5 + "yz€".encode()
    rng = random.Random(3)
    for _ in range(100):
        cuts = sorted(rng.sample(range(1, len(data)), 9))
        parity = 0
        for lo, hi in zip([0, *cuts], [*cuts, len(data)]):
            newline, n = line_parity(data[lo:hi])
            parity = n if newline else (parity + n) % 2
            line = data[: hi].rsplit(b"\n", 1)[-1]
            assert parity == sum(1 for b in line if b & 0xC0 != 0x80) % 2  # character starts since the line began
