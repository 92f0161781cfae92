"""Text corpora -> Parquet shards of token blocks + a manifest, with parallel Ray tasks.

Two passes over fixed-size byte chunks, each chunk one task, so memory stays flat in corpus size:

    pass 1 (count):  chunk -> symbol counts, #tokens, #chars, sha256   (validates UTF-8 too)
    driver:          merge counts -> vocabulary; fingerprint unchanged? -> done (idempotent)
    pass 2 (encode): chunk -> int32 ids -> <dataset>/<version>/<split>/part-NNNNN.parquet (+ its sha256)
    driver:          manifest.json written last; older versions removed (``seqgen.data.publish``;
                     a failed encode pass leaves no shard behind)

Inputs are paths or fsspec URLs (s3://, gs://, memory://, file://). The fingerprint depends on the
settings and on the *content* of each split's inputs, never on where they were read from: the same
corpus gives the same dataset from a local copy or from s3://.

A chunk owns the bytes from the first tokeniser boundary at or after its start up to the first
boundary at or after its end, so no symbol is cut in two and every byte is owned exactly once. A
chunk with no boundary inside it owns nothing (the chunk before reads on through it), so every
byte is scanned for a boundary by one chunk only: the work is linear even in a 100 MB line. A
bigram pair cannot start after an odd number of characters of its line, so for ``bigram`` a cheap
first pass (``line_parity`` per chunk, composed on the driver) tells each chunk the parity at its
start and end. A task reads its range ``read_bytes`` at a time, cut at token boundaries
(``safe_cut``), and writes its shard a row (``block_tokens`` ids, one Parquet row group) at a
time, so its memory does not grow with the chunk size; readers fetch single row groups
(``seqgen.data.streams``).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np
import pyarrow as pa
from fsspec.core import url_to_fs

from seqgen.data.tokenizers import Vocabulary, count_chars, count_symbols, first_boundary, line_parity, safe_cut
from seqgen.data.publish import fingerprint, publish, shard_name
from seqgen.data.shards import DatasetError, ShardWriter  # noqa: F401  (DatasetError: re-exported)
from seqgen.data.streams import open_split  # noqa: F401  (re-exported)
from seqgen.progress import track
from seqgen.lease import writes_dataset
from seqgen.runtime import map_tasks
from seqgen.storage import Storage, join, shared_across_processes

SCHEMA_VERSION = 1
SPLITS = ("train", "valid", "test")
SHARD_SCHEMA = pa.schema([("tokens", pa.list_(pa.int32()))])  # one row = block_tokens ids
# Plain encoding + zstd: files as small as pyarrow's default (dictionary + snappy) on text, for far
# less CPU to write (dictionary-encoding token ids was most of an encode task's time; measured in
# benchmarks/README.md).
SHARD_OPTIONS = {"use_dictionary": False, "compression": "zstd"}
SCAN_BYTES = 1 << 16  # bytes read at a time while looking for a boundary


@dataclass
class TextSpec:
    """What to preprocess: explicit split files, or one file split by tail fractions."""

    tokenizer: str = "char"
    files: dict[str, list[str]] = field(default_factory=dict)  # split -> urls
    valid_fraction: float = 0.0  # tail fractions of the train file(s) (hutter preset: 0.05 each)
    test_fraction: float = 0.0
    max_vocab: int = 0  # 0 = no cap
    tokens_are_chars: bool = False  # each token is one character of the text (Mikolov's char-level PTB)
    chunk_bytes: int = 8 << 20
    block_tokens: int = 1 << 16  # tokens per Parquet row (= row group: what a reader fetches at once)
    read_bytes: int = 1 << 20  # bytes a task reads and tokenises at a time (bounds its memory)

    def settings(self) -> dict:
        """What shapes the tokens (not where the inputs live, nor how they are cut into tasks)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("chunk_bytes", "read_bytes", "files")}


@dataclass(frozen=True)
class Chunk:
    index: int
    split: str
    url: str
    start: int  # nominal byte range; the owned range is snapped to tokeniser boundaries
    end: int
    file_end: int  # the file's size (a tail-fraction cut is snapped like any other chunk end)
    parity: int = 0  # bigram: characters since the line start, mod 2, at ``start`` ...
    end_parity: int = 0  # ... and at ``end`` (from `_parity_task`)


def _open(url: str, block: int):
    fs, path = url_to_fs(url)
    return fs.open(path, "rb", block_size=block)  # reads of ~block bytes: no multi-MB read-ahead


def _read(f, n: int, url: str) -> bytes:
    data = f.read(n)
    if not data:
        raise DatasetError(f"{url} became shorter while it was read; rerun on a file that does not change")
    return data


def _snap(f, url: str, kind: str, pos: int, limit: int, parity: int) -> int:
    """The first token boundary at or after ``pos``, or ``limit`` if none comes before it."""
    if kind == "bigram":  # a character start; inside a pair (odd parity, not a newline), the next one
        c = _snap(f, url, "char", pos, limit, 0)
        if parity and c < limit:
            f.seek(c)
            if f.read(1) != b"\n":
                c = _snap(f, url, "char", c + 1, limit, 0)
        return c
    if pos <= 0 or pos >= limit:
        return min(max(pos, 0), limit)
    f.seek(pos - 1)
    prev, step = _read(f, 1, url)[0], 64
    while pos < limit:  # boundaries are usually a few bytes away: read 64 bytes, then twice as many, ...
        block = _read(f, min(step, limit - pos), url)
        i = first_boundary(kind, prev, block)
        if i < len(block):
            return pos + i
        pos, prev, step = pos + len(block), block[-1], min(2 * step, SCAN_BYTES)
    return limit


def _owned(f, kind: str, chunk: Chunk) -> tuple[int, int]:
    """The owned byte range (see the module docstring). The start is looked for inside the chunk
    only; the end may lie beyond it, in chunks that own nothing."""
    start = _snap(f, chunk.url, kind, chunk.start, chunk.end, chunk.parity)
    if start >= chunk.end:
        return chunk.end, chunk.end
    return start, _snap(f, chunk.url, kind, chunk.end, chunk.file_end, chunk.end_parity)


def _pieces(f, kind: str, start: int, end: int, url: str, size: int) -> Iterator[tuple[int, bytes]]:
    """[start, end) as (offset, bytes) pieces of about ``size`` bytes, each cut at a token boundary."""
    f.seek(start)
    pos, carry, at = start, b"", start
    while pos < end:
        data = _read(f, min(size, end - pos), url)
        pos += len(data)
        buf = carry + data if carry else data
        cut = len(buf) if pos >= end else safe_cut(kind, buf)
        if cut:
            yield at, buf[:cut]
        carry, at = buf[cut:], at + cut


def _parity_task(chunk: Chunk, read_bytes: int) -> tuple[bool, int]:
    """`line_parity` of the chunk's nominal range (bigram only)."""
    reset, parity = False, 0
    with _open(chunk.url, read_bytes) as f:
        f.seek(chunk.start)
        pos = chunk.start
        while pos < chunk.end:
            data = _read(f, min(read_bytes, chunk.end - pos), chunk.url)
            pos += len(data)
            newline, n = line_parity(data)
            reset, parity = (True, n) if newline else (reset, (parity + n) % 2)
    return reset, parity


def _with_parities(chunks: list[Chunk], summaries: list[tuple[bool, int]]) -> list[Chunk]:
    """Each chunk's parity at its start and end, composed along each file from its first byte."""
    out, parity = [], 0
    for chunk, (reset, n) in zip(chunks, summaries):
        parity = 0 if chunk.start == 0 else parity  # the chunks of a file follow each other in the plan
        end_parity = n if reset else (parity + n) % 2
        out.append(replace(chunk, parity=parity, end_parity=end_parity))
        parity = end_parity
    return out


def _count_task(kind: str, chunk: Chunk, read_bytes: int = 1 << 20) -> dict:
    counts, tokens, chars, digest = Counter(), 0, 0, hashlib.sha256()
    try:
        with _open(chunk.url, read_bytes) as f:
            start, end = _owned(f, kind, chunk)
            for offset, piece in _pieces(f, kind, start, end, chunk.url, read_bytes):
                piece_counts = count_symbols(kind, piece, offset, chunk.url)
                counts.update(piece_counts)
                tokens += piece_counts.total()
                chars += count_chars(kind, piece)
                digest.update(piece)
    except ValueError as e:
        return {"error": str(e)}
    return {"counts": counts, "tokens": tokens, "chars": chars, "sha256": digest.hexdigest()}


def _row(ids: np.ndarray) -> pa.Table:
    return pa.table({"tokens": pa.ListArray.from_arrays(pa.array([0, len(ids)], pa.int32()), pa.array(ids))},
                    schema=SHARD_SCHEMA)


def _encode_task(kind: str, chunk: Chunk, vocab_json: dict, out_url: str, block: int,
                 read_bytes: int = 1 << 20) -> tuple[int, str]:
    """-> (tokens written, sha256 of the shard file)."""
    vocab = Vocabulary.from_json(vocab_json)
    writer = ShardWriter(out_url, SHARD_SCHEMA, **SHARD_OPTIONS)
    row, filled, total = np.empty(block, np.int32), 0, 0
    with _open(chunk.url, read_bytes) as f:
        start, end = _owned(f, kind, chunk)
        for offset, piece in _pieces(f, kind, start, end, chunk.url, read_bytes):
            ids = vocab.encode_chunk(piece, offset, chunk.url)
            total += len(ids)
            while len(ids):
                take = min(block - filled, len(ids))
                row[filled : filled + take], ids = ids[:take], ids[take:]
                filled += take
                if filled == block:
                    writer.write(_row(row))
                    row, filled = np.empty(block, np.int32), 0
    if filled:
        writer.write(_row(row[:filled]))
    return total, writer.close()


def plan_chunks(spec: TextSpec) -> list[Chunk]:
    """Cut every input into byte chunks; tail fractions cut the train file(s) into splits."""
    chunks: list[Chunk] = []
    if not spec.files.get("train"):
        raise DatasetError("no training input given")
    unknown = set(spec.files) - set(SPLITS)
    if unknown:
        raise DatasetError(f"unknown split(s) {sorted(unknown)}; valid: {SPLITS}")
    tails = spec.valid_fraction + spec.test_fraction
    if tails and (len(spec.files) > 1 or not 0 < tails < 1):
        raise DatasetError("tail fractions need a single train input and must sum to less than 1")
    for split, urls in spec.files.items():
        for url in urls:
            fs, path = url_to_fs(url)
            if not fs.exists(path):
                raise DatasetError(f"input file not found: {url}")
            size = fs.size(path)
            if not size:
                raise DatasetError(f"input file is empty: {url}")
            cut_valid = int(size * (1 - tails))
            cut_test = int(size * (1 - spec.test_fraction))
            ranges = {"train": (0, cut_valid), "valid": (cut_valid, cut_test), "test": (cut_test, size)}
            ranges = ranges if tails else {split: (0, size)}
            for part, (lo, hi) in ranges.items():
                if hi <= lo:
                    continue
                for start in range(lo, hi, spec.chunk_bytes):
                    end = min(start + spec.chunk_bytes, hi)
                    chunks.append(Chunk(len(chunks), part, url, start, end, size))
    return chunks


@writes_dataset  # one writer per dataset name (seqgen.lease)
def preprocess_text(storage: Storage, name: str, spec: TextSpec, use_ray: bool | None = None, force: bool = False) -> dict:
    """Build dataset ``name`` on ``storage``; returns its manifest. Idempotent unless ``force``.

    Ray tasks do the work unless the storage or an input is ``memory://`` (one process only)."""
    if use_ray is None:
        use_ray = storage.shared_across_processes and all(map(shared_across_processes, sum(spec.files.values(), [])))
    kind = spec.tokenizer
    chunks = plan_chunks(spec)
    sizes = [c.end - c.start for c in chunks]  # bytes per task, for the MB/s of the progress line
    if kind == "bigram":
        parities = list(track(map_tasks(_parity_task, [(c, spec.read_bytes) for c in chunks], use_ray),
                              f"preprocess {name}: lines", len(chunks), "tasks", sizes))
        chunks = _with_parities(chunks, parities)
    counted = list(track(map_tasks(_count_task, [(kind, c, spec.read_bytes) for c in chunks], use_ray),
                         f"preprocess {name}: count", len(chunks), "tasks", sizes))
    errors = [r["error"] for r in counted if "error" in r]
    if errors:
        raise DatasetError(errors[0])
    sources: dict[tuple[str, str], hashlib._Hash] = {}  # (split, url) -> hash of its chunks' hashes
    per_split = {s: Counter() for s in SPLITS}
    stats = {s: {"tokens": 0, "chars": 0} for s in SPLITS}
    for chunk, r in zip(chunks, counted):
        per_split[chunk.split].update(r["counts"])
        stats[chunk.split]["tokens"] += r["tokens"]
        stats[chunk.split]["chars"] += r["chars"]
        sources.setdefault((chunk.split, chunk.url), hashlib.sha256()).update(bytes.fromhex(r["sha256"]))
    vocab = _build_vocab(kind, per_split, spec.max_vocab)
    source_info = [{"split": s, "url": u, "sha256_of_chunks": h.hexdigest()} for (s, u), h in sources.items()]
    fp = fingerprint(spec.settings(), [[i["split"], i["sha256_of_chunks"]] for i in source_info])

    vocab_json = vocab.to_json()

    def build(version: str) -> dict:
        paths = [shard_name(version, c.split, c.index) for c in chunks]
        args = [(kind, c, vocab_json, storage.url_of(join(storage.dataset_dir(name), p)), spec.block_tokens,
                 spec.read_bytes) for c, p in zip(chunks, paths)]
        encoded = list(track(map_tasks(_encode_task, args, use_ray), f"preprocess {name}: encode", len(chunks),
                             "tasks", sizes))
        splits = {}
        for chunk, path, (n, sha) in zip(chunks, paths, encoded):
            entry = splits.setdefault(chunk.split, {"tokens": 0, "chars": stats[chunk.split]["chars"], "shards": []})
            entry["tokens"] += n
            entry["shards"].append({"path": path, "tokens": n, "sha256": sha})
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "text",
            "tokenizer": kind,
            "vocab": vocab_json,
            "vocab_size": len(vocab),
            "splits": splits,
            "sources": source_info,
            "settings": spec.settings(),
        }

    return publish(storage, name, fp, build, force)


def _build_vocab(kind: str, per_split: dict[str, Counter], max_vocab: int) -> Vocabulary:
    if kind != "word":
        return Vocabulary.build(kind, sum(per_split.values(), Counter()), max_vocab)
    train = per_split["train"]  # word vocabularies come from training text only (PTB)
    held_out = set(per_split["valid"]) | set(per_split["test"])
    return Vocabulary.build(kind, train, max_vocab, needs_unk=bool(held_out - set(train)))


# reading ---------------------------------------------------------------------------------
def chars_per_token(manifest: dict, split: str = "train") -> float:
    """Characters of text per token, to turn bits per token into bits per character."""
    if manifest.get("settings", {}).get("tokens_are_chars"):
        return 1.0
    info = manifest["splits"][split]
    return info["chars"] / max(info["tokens"], 1)


def load_manifest(storage: Storage, name: str) -> dict:
    path = join(storage.dataset_dir(name), "manifest.json")
    if not storage.exists(path):
        raise FileNotFoundError(
            f"dataset {name!r} not found under {storage.url} (run `seqgen preprocess` first)"
        )
    return storage.read_json(path)


def load_split(storage: Storage, manifest: dict, split: str, rank: int = 0, world: int = 1) -> np.ndarray:
    """The token ids of ``split`` for worker ``rank`` of ``world`` (a contiguous 1/world share) in
    memory. Training and evaluation read them lazily instead: ``open_split``."""
    return open_split(storage, manifest, split, rank, world).read().astype(np.int32)

