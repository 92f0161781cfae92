"""Token ids read lazily from a text dataset's shards, so that training and evaluation hold a
bounded amount of the corpus in memory however large it is.

A split is a sequence of token ids stored as shards (one per preprocessing chunk); a shard's rows
hold ``block_tokens`` ids each, and each row is its own Parquet row group, so any range of ids is
read by fetching only the row groups that overlap it (datasets written before that layout have one
row group per shard: still correct, but a read then decodes a whole shard).

    SplitTokens   the ids of a split, or a contiguous part of it: ``len(t)``, ``t[a:b]`` (a view,
                  nothing read), ``t.read(a, b)`` -> np.ndarray. Decoded row groups are kept in a
                  least-recently-used cache of bounded size, in the smallest dtype the vocabulary fits.
    Streams       ``batchify`` without loading: B contiguous rows over a token sequence, read one
                  window of columns at a time, each row from its own region of the split.

Every shard's sha256 (from the manifest) is checked, streaming, the first time it is touched, so a
damaged file is still an error naming it, never silently different data.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pyarrow.parquet as pq

from seqgen.data.shards import rank_share, shard_path, split_info, verify_shard
from seqgen.storage import Storage

CACHE_BYTES = 32 << 20  # decoded row groups kept per split (a corpus that fits is read once)


def _dtype(vocab_size: int):
    return np.uint8 if vocab_size <= 1 << 8 else np.uint16 if vocab_size <= 1 << 16 else np.int32


class _SplitReader:
    """The shared state of one split's reader: where each shard and row group starts, which shards
    are verified, and the row-group cache. Views (`SplitTokens`) of one split share it."""

    def __init__(self, storage: Storage, manifest: dict, split: str, cache_bytes: int):
        self.storage, self.manifest = storage, manifest
        self.shards = [s for s in split_info(manifest, split)["shards"] if s["tokens"]]
        self.starts = np.cumsum([0] + [s["tokens"] for s in self.shards])  # split offset of each shard
        self.dtype = _dtype(manifest["vocab_size"])
        self.cache_bytes, self.min_groups = cache_bytes, 2
        self.groups: dict[int, np.ndarray] = {}  # shard -> token offset of each row group (+ end), small
        self.cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self.cached = 0
        self.verified: set[int] = set()
        self.groups_read = 0  # row groups decoded (tests and benchmarks watch this)

    def _group_offsets(self, s: int) -> np.ndarray:
        if s not in self.groups:
            self._verify(s)
            with self._open(s) as f:
                meta = pq.ParquetFile(f).metadata
            counts = [meta.row_group(g).column(0).num_values for g in range(meta.num_row_groups)]
            self.groups[s] = np.cumsum([0] + counts)
        return self.groups[s]

    def _verify(self, s: int) -> None:
        if s not in self.verified:
            verify_shard(self.storage, self.manifest, self.shards[s])
            self.verified.add(s)

    def _open(self, s: int):
        # exact range reads: fsspec's default read-ahead would fetch megabytes (S3) per row group
        return self.storage.fs.open(shard_path(self.storage, self.manifest, self.shards[s]), "rb",
                                    block_size=1 << 18, cache_type="none")

    def _group(self, s: int, g: int) -> np.ndarray:
        key = (s, g)
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        offsets = self._group_offsets(s)
        with self._open(s) as f:
            column = pq.ParquetFile(f).read_row_group(g, columns=["tokens"]).column("tokens")
        ids = column.combine_chunks().flatten().to_numpy(zero_copy_only=False).astype(self.dtype)
        if len(ids) != offsets[g + 1] - offsets[g]:
            raise ValueError(f"dataset {self.manifest['name']!r}: shard {self.shards[s]['path']} row group {g} "
                             f"has {len(ids)} tokens, its metadata says {offsets[g + 1] - offsets[g]}")
        self.groups_read += 1
        self.cache[key] = ids
        self.cached += ids.nbytes
        while self.cached > self.cache_bytes and len(self.cache) > self.min_groups:
            self.cached -= self.cache.popitem(last=False)[1].nbytes
        return ids

    def read(self, a: int, b: int) -> np.ndarray:
        """Token ids [a, b) of the split."""
        out = np.empty(b - a, self.dtype)
        pos = a
        while pos < b:
            s = int(np.searchsorted(self.starts, pos, "right")) - 1
            local = pos - int(self.starts[s])
            offsets = self._group_offsets(s)
            g = int(np.searchsorted(offsets, local, "right")) - 1
            ids = self._group(s, g)
            i = local - int(offsets[g])
            take = min(b - pos, len(ids) - i)
            out[pos - a : pos - a + take] = ids[i : i + take]
            pos += take
        return out


class SplitTokens:
    """Token ids [lo, hi) of one split, read on demand (see the module docstring)."""

    def __init__(self, reader: _SplitReader, lo: int, hi: int):
        self.reader, self.lo, self.hi = reader, lo, hi

    def __len__(self) -> int:
        return self.hi - self.lo

    def __getitem__(self, key: slice) -> "SplitTokens":
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("SplitTokens takes contiguous slices only; use .read(a, b) for the ids")
        a, b, _ = key.indices(len(self))
        return SplitTokens(self.reader, self.lo + a, self.lo + max(a, b))

    def read(self, a: int = 0, b: int | None = None) -> np.ndarray:
        b = len(self) if b is None else b
        if not 0 <= a <= b <= len(self):
            raise IndexError(f"range [{a}, {b}) outside {len(self)} tokens")
        return self.reader.read(self.lo + a, self.lo + b)


def open_split(storage: Storage, manifest: dict, split: str, rank: int = 0, world: int = 1,
               cache_bytes: int = CACHE_BYTES) -> SplitTokens:
    """The ids of ``split`` for worker ``rank`` of ``world``: a contiguous 1/world share, read lazily."""
    reader = _SplitReader(storage, manifest, split, cache_bytes)
    total = int(reader.starts[-1])
    return SplitTokens(reader, *rank_share(total, rank, world))


class Streams:
    """``seqgen.evaluate.batchify`` without loading the tokens::

        tokens:  a b c d e f g h i j k l m n o p q r      (N tokens, B = 3 streams, L = N // B)
        rows:    a b c d e f           row b is tokens [b*L, (b+1)*L), read window by window:
                 g h i j k l           window(2, 5) = [[c d e], [i j k], [o p q]]; only the row
                 m n o p q r           groups under a window are fetched (and cached)
    The last N mod B tokens are dropped. ``tokens`` is a `SplitTokens` or an in-memory array.
    """

    def __init__(self, tokens, streams: int):
        self.tokens, self.rows = tokens, streams
        self.length = len(tokens) // streams
        if self.length < 2:
            raise ValueError(f"{len(tokens)} tokens are too few for {streams} streams")
        if isinstance(tokens, SplitTokens):  # each row keeps its current (and next) row group cached
            tokens.reader.min_groups = max(tokens.reader.min_groups, 2 * streams + 2)

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows, self.length

    def window(self, start: int, stop: int):
        """Columns [start, stop) of every row (clipped to the row length): a (B, stop - start) int64
        tensor."""
        import torch  # not at the top: preprocessing tasks import this module and need no torch

        stop = min(stop, self.length)
        L, t = self.length, self.tokens
        read = t.read if isinstance(t, SplitTokens) else (lambda a, b: np.asarray(t[a:b]))
        rows = [read(b * L + start, b * L + stop) for b in range(self.rows)]
        return torch.from_numpy(np.stack(rows).astype(np.int64))
