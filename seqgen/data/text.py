"""Text corpora -> Parquet shards of token blocks + a manifest, with parallel Ray tasks.

Two passes over fixed-size byte chunks, each chunk one task, so memory stays flat in corpus size:

    pass 1 (count):  chunk -> symbol counts, #tokens, #chars, sha256   (validates UTF-8 too)
    driver:          merge counts -> vocabulary; fingerprint unchanged? -> done (idempotent)
    pass 2 (encode): chunk -> int32 ids -> <dataset>/<version>/<split>/part-NNNNN.parquet (+ its sha256)
    driver:          manifest.json written last; older versions removed

Inputs are paths or fsspec URLs (s3://, gs://, memory://, file://). The fingerprint depends on the
settings and on the *content* of each split's inputs, never on where they were read from: the same
corpus gives the same dataset from a local copy or from s3://.

A chunk owns the bytes from the first tokeniser boundary at or after its start up to the first
boundary at or after its end, so no symbol is cut in two and every byte is owned exactly once.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from fsspec.core import url_to_fs

from seqgen.data.tokenizers import Vocabulary, count_chars, count_symbols, is_boundary
from seqgen.data.shards import (  # noqa: F401  (DatasetError, remove_old_versions: re-exported)
    DatasetError,
    fingerprint,
    new_version,
    rank_slices,
    read_shard,
    remove_old_versions,
    split_info,
)
from seqgen.progress import track
from seqgen.lease import writes_dataset
from seqgen.runtime import map_tasks
from seqgen.storage import Storage, join, shared_across_processes, write_parquet

SCHEMA_VERSION = 1
SPLITS = ("train", "valid", "test")


@dataclass
class TextSpec:
    """What to preprocess: explicit split files, or one file split by tail fractions."""

    tokenizer: str = "char"
    files: dict[str, list[str]] = field(default_factory=dict)  # split -> urls
    valid_fraction: float = 0.0  # tail fractions of the train file(s) (Hutter: 0.04)
    test_fraction: float = 0.0
    max_vocab: int = 0  # 0 = no cap
    tokens_are_chars: bool = False  # each token is one character of the text (Mikolov's char-level PTB)
    chunk_bytes: int = 8 << 20
    block_tokens: int = 1 << 16  # tokens per Parquet row

    def settings(self) -> dict:
        """What shapes the tokens (not where the inputs live, nor how they are cut into tasks)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("chunk_bytes", "files")}


@dataclass(frozen=True)
class Chunk:
    index: int
    split: str
    url: str
    start: int  # nominal byte range; the owned range is snapped to tokeniser boundaries
    end: int
    file_end: int  # the file's size (a tail-fraction cut is snapped like any other chunk end)


def _read_owned(kind: str, chunk: Chunk) -> tuple[int, bytes]:
    """The owned byte range's start and its bytes (see module docstring)."""
    fs, path = url_to_fs(chunk.url)
    with fs.open(path, "rb") as f:

        def snap(pos: int) -> int:
            if pos <= 0 or pos >= chunk.file_end:
                return min(max(pos, 0), chunk.file_end)
            f.seek(pos - 1)
            prev = f.read(1)[0]
            while pos < chunk.file_end:
                block = f.read(min(4096, chunk.file_end - pos))
                for b in block:
                    if is_boundary(kind, prev, b):
                        return pos
                    prev = b
                    pos += 1
            return chunk.file_end

        start, end = snap(chunk.start), snap(chunk.end)
        f.seek(start)
        return start, f.read(end - start)


def _count_task(kind: str, chunk: Chunk) -> dict:
    try:
        start, data = _read_owned(kind, chunk)
        counts = count_symbols(kind, data, start, chunk.url)
    except ValueError as e:
        return {"error": str(e)}
    return {
        "counts": counts,
        "tokens": counts.total(),
        "chars": count_chars(kind, data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def _encode_task(kind: str, chunk: Chunk, vocab_json: dict, out_url: str, block: int) -> tuple[int, str]:
    """-> (tokens written, sha256 of the shard file)."""
    vocab = Vocabulary.from_json(vocab_json)
    start, data = _read_owned(kind, chunk)
    ids = vocab.encode_chunk(data, start, chunk.url)
    blocks = [ids[i : i + block] for i in range(0, len(ids), block)]
    table = pa.table({"tokens": pa.array(blocks, type=pa.list_(pa.int32()))})
    return len(ids), write_parquet(out_url, table)


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
    counted = list(track(map_tasks(_count_task, [(kind, c) for c in chunks], use_ray),
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

    manifest_path = join(storage.dataset_dir(name), "manifest.json")
    if not force and storage.exists(manifest_path):
        old = storage.read_json(manifest_path)
        if old.get("fingerprint") == fp:
            return old

    version = new_version()
    base = join(storage.dataset_dir(name), version)
    out = [storage.url_of(f"{base}/{c.split}/part-{c.index:05d}.parquet") for c in chunks]
    vocab_json = vocab.to_json()
    encoded = list(track(map_tasks(_encode_task, [(kind, c, vocab_json, o, spec.block_tokens) for c, o in zip(chunks, out)],
                                   use_ray), f"preprocess {name}: encode", len(chunks), "tasks", sizes))
    splits = {}
    for chunk, (n, sha) in zip(chunks, encoded):
        entry = splits.setdefault(chunk.split, {"tokens": 0, "chars": stats[chunk.split]["chars"], "shards": []})
        entry["tokens"] += n
        entry["shards"].append({"path": f"{version}/{chunk.split}/part-{chunk.index:05d}.parquet", "tokens": n,
                                "sha256": sha})
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "kind": "text",
        "fingerprint": fp,
        "tokenizer": kind,
        "vocab": vocab_json,
        "vocab_size": len(vocab),
        "splits": splits,
        "sources": source_info,
        "settings": spec.settings(),
        "created": _now(),
    }
    storage.write_json_atomic(manifest_path, manifest)  # the dataset becomes visible here
    remove_old_versions(storage, name, keep=version)
    return manifest


def _build_vocab(kind: str, per_split: dict[str, Counter], max_vocab: int) -> Vocabulary:
    if kind != "word":
        return Vocabulary.build(kind, sum(per_split.values(), Counter()), max_vocab)
    train = per_split["train"]  # word vocabularies come from training text only (PTB)
    held_out = set(per_split["valid"]) | set(per_split["test"])
    return Vocabulary.build(kind, train, max_vocab, needs_unk=bool(held_out - set(train)))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


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
    """The token ids of ``split`` for worker ``rank`` of ``world``: a contiguous 1/world share,
    reading (and verifying) only the shards that overlap it."""
    info = split_info(manifest, split)
    parts = []
    for shard, start, stop in rank_slices(info["shards"], "tokens", info["tokens"], rank, world):
        column = read_shard(storage, manifest, shard, ["tokens"]).column("tokens")
        parts.append(column.combine_chunks().flatten().to_numpy(zero_copy_only=False)[start:stop])
    return np.concatenate(parts) if parts else np.zeros(0, np.int32)
