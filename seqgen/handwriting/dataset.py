"""IAM-OnDB -> Parquet shards of pen-offset lines + a manifest, parsed in parallel Ray tasks.

    driver:  discover forms (the root: a path or an fsspec URL); fingerprint = settings + split
             assignment + (relative path, size) of every input file: unchanged? -> return the
             existing manifest (idempotent; the same for a local copy and an s3:// copy)
             split BY FORM (all lines of a form share a split): explicit lists, else a salted hash
    tasks:   forms_per_task forms of one split -> `load_forms` -> one shard
             <dataset>/<version>/<split>/part-NNNNN.parquet (+ its sha256), plus the partial sums
             (n, sum dx, sum dy, sum dx^2, sum dy^2), the characters seen and the skip report
    driver:  merge -> alphabet, train-split mean/std of (dx, dy), skip report;
             manifest.json written last (the dataset becomes visible there); older versions removed
             (``seqgen.data.publish``: a failed build leaves no shard behind)

A shard row is one line: form_id, line_id, text, n_points = T, and offsets = the (T, 3) rows
(dx, dy, eos) of `strokes_to_offsets` flattened row-major (list<float32>), in raw whiteboard units
with row 0 = (0, 0, eos_0). Normalisation is stored, not applied: ``offset_mean`` / ``offset_std``
are the per-axis statistics of the real steps (rows 1..T-1) of the *train* split (sec. 4.2).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections import Counter

import numpy as np
import pyarrow as pa
from fsspec.core import url_to_fs

from seqgen.data.presets import data_root
from seqgen.data.publish import fingerprint, publish, shard_name
from seqgen.data.shards import DatasetError, rank_slices, read_shard, split_info
from seqgen.data.text import SPLITS
from seqgen.handwriting.iam import SkipReport, discover_forms, full_alphabet, graves57_alphabet, list_files, load_forms
from seqgen.progress import track
from seqgen.lease import writes_dataset
from seqgen.runtime import map_tasks
from seqgen.storage import Storage, join, shared_across_processes, write_parquet

SCHEMA_VERSION = 1
ALPHABETS = ("full", "graves57")
_SALT = "seqgen-iam-split-v1"  # changing it reshuffles the fraction split


def default_root(data_dir: str | None = None) -> str:
    """The IAM-OnDB root under a data dir (a path or an fsspec URL): the data dir itself when it is in
    IAM-OnDB's layout (``lineStrokes/`` and ``ascii/``, e.g. a user's own lines), else
    ``<data dir>/handwriting/iam-ondb``."""
    base = data_root("IAM-OnDB handwriting", data_dir)
    fs, path = url_to_fs(base)
    if fs.isdir(join(path, "lineStrokes")) and fs.isdir(join(path, "ascii")):
        return base
    return join(base, "handwriting", "iam-ondb")


def assign_splits(complete: list[str], splits: dict | None, valid_fraction: float, test_fraction: float) -> dict[str, str]:
    """form id -> split.

    Explicit ``splits`` ({split: [form ids]}): listed forms go to their split; when "train" is not
    listed, every other complete form goes to train. Otherwise the complete forms (text + strokes)
    are ranked by sha256(salt + form id): the first round(n * valid_fraction) go to valid (at least
    one when the fraction is > 0 and n > 1), the next to test, the rest to train. Hash ranks do not
    depend on the order of discovery, so the split is deterministic and stable.
    """
    if splits is not None:
        if unknown := set(splits) - set(SPLITS):
            raise DatasetError(f"unknown split(s) {sorted(unknown)}; valid: {SPLITS}")
        out: dict[str, str] = {}
        for split, ids in splits.items():
            for f in ids:
                if out.setdefault(f, split) != split:
                    raise DatasetError(f"form {f!r} is listed in both {out[f]!r} and {split!r}")
        if "train" not in splits:
            out.update({f: "train" for f in complete if f not in out})
        return out
    if valid_fraction < 0 or test_fraction < 0 or valid_fraction + test_fraction >= 1:
        raise DatasetError("valid_fraction and test_fraction must be >= 0 and sum to less than 1")
    ranked = sorted(complete, key=lambda f: hashlib.sha256(f"{_SALT}:{f}".encode()).hexdigest())
    n = len(ranked)
    count = lambda frac: max(round(n * frac), int(frac > 0 and n > 1))  # noqa: E731
    n_valid = count(valid_fraction)
    n_test = min(count(test_fraction), max(n - n_valid - 1, 0))
    return {f: "valid" if i < n_valid else "test" if i < n_valid + n_test else "train" for i, f in enumerate(ranked)}


def _parse_task(root: str, form_ids: list[str], out_url: str) -> dict:
    """One task: parse ``form_ids`` and write their lines to one shard (nothing if none is usable)."""
    records, report = load_forms(root, form_ids)
    result = {"lines": len(records), "points": 0, "chars": "", "sums": [0.0] * 5, "skipped": report.skipped,
              "sha256": None}
    if not records:
        return result
    offsets = [r.strokes for r in records]  # (T_i, 3) float32
    sizes = np.array([3 * len(o) for o in offsets])
    table = pa.table({
        "form_id": [r.form_id for r in records],
        "line_id": [r.line_id for r in records],
        "text": [r.text for r in records],
        "offsets": pa.ListArray.from_arrays(pa.array(np.r_[0, np.cumsum(sizes)], pa.int32()),
                                            pa.array(np.concatenate([o.ravel() for o in offsets]), pa.float32())),
        "n_points": pa.array(sizes // 3, pa.int32()),
    })
    result["sha256"] = write_parquet(out_url, table)
    steps = np.concatenate([o[1:, :2] for o in offsets]).astype(np.float64)  # real steps only: row 0 is the origin
    result.update(points=int(sizes.sum() // 3), chars="".join(sorted(set("".join(r.text for r in records)))),
                  sums=[len(steps), *steps.sum(0).tolist(), *np.square(steps).sum(0).tolist()])
    return result


def _file_sizes(root: str) -> dict[str, int]:
    """Bytes of every transcription and stroke file under the root, by path."""
    return list_files(root, "ascii", ".txt", detail=True) | list_files(root, "lineStrokes", ".xml", detail=True)


def _form_files(form) -> list[str]:
    return ([form.transcription] if form.transcription else []) + list(form.lines)


def _sources(root: str, forms, sizes: dict[str, int]) -> dict:
    """The input's identity: sha256 over every file's path relative to the root and size (so a copy
    of the tree elsewhere, local or s3://, has the same identity)."""
    h, n = hashlib.sha256(), 0
    for form in forms:
        for p in _form_files(form):
            h.update(f"{_relative(p, root)}\t{sizes[p]}\n".encode())
            n += 1
    return {"root": root, "files": n, "sha256_of_paths_and_sizes": h.hexdigest()}


def _relative(path: str, root: str) -> str:
    return path[len(root) + 1 :] if path.startswith(root + "/") else path


def _root_url(root: str | None, data_dir: str | None) -> str:
    """A local root as an absolute path (as tasks on other nodes see it), a URL as it is."""
    if not root:
        return default_root(data_dir).rstrip("/")
    root = str(root)
    return root.rstrip("/") if "://" in root else os.path.abspath(os.path.expanduser(root))


def _skip_summary(report: SkipReport, root: str) -> dict:
    rel = lambda f: _relative(f, root)  # noqa: E731
    return {"count": len(report),
            "by_reason": dict(Counter(reason.partition(":")[0] for _, reason in report.skipped).most_common()),
            "files": [[rel(f), reason] for f, reason in report.skipped]}


@writes_dataset  # one writer per dataset name (seqgen.lease)
def preprocess_handwriting(storage: Storage, name: str, root: str | None = None, alphabet: str = "full",
                           splits: dict | None = None, valid_fraction: float = 0.1, test_fraction: float = 0.0,
                           forms_per_task: int = 16, use_ray: bool | None = None, force: bool = False,
                           data_dir: str | None = None) -> dict:
    """Build handwriting dataset ``name`` on ``storage`` from an IAM-OnDB root; returns its manifest.

    ``root`` (a path or an fsspec URL) defaults to ``<data_dir>/handwriting/iam-ondb``; ``alphabet`` is "full" (every character
    of the text, built from the data) or "graves57" (sec. 5); ``splits`` / fractions: see
    `assign_splits`. Skipped files are listed in ``manifest["skipped"]`` and summarised on stderr.
    Idempotent unless ``force``; raises `DatasetError` (nothing written) when no line is usable.
    """
    if alphabet not in ALPHABETS:
        raise DatasetError(f"unknown alphabet {alphabet!r}; valid: {', '.join(ALPHABETS)}")
    root_path = _root_url(root, data_dir)
    fs, path = url_to_fs(root_path)
    if not fs.isdir(path):
        raise FileNotFoundError(f"IAM-OnDB root not found: {root_path}")
    if use_ray is None:
        use_ray = storage.shared_across_processes and shared_across_processes(root_path)
    forms = discover_forms(root_path)
    if not forms:
        raise DatasetError(f"no IAM-OnDB forms under {root_path} (expected ascii/**/*.txt and lineStrokes/**/*.xml)")
    complete = [f.form_id for f in forms if f.transcription and f.lines]
    assignment = assign_splits(complete, splits, valid_fraction, test_fraction)
    sizes = _file_sizes(root_path)
    sources = _sources(root_path, forms, sizes)
    settings = {"alphabet": alphabet, "schema_version": SCHEMA_VERSION, "valid_fraction": valid_fraction,
                "test_fraction": test_fraction, "explicit_splits": splits is not None}
    fp = fingerprint(settings, sorted(assignment.items()), sources["sha256_of_paths_and_sizes"])
    report = SkipReport()  # what the build skipped (nothing when the dataset is up to date already)

    def build(version: str) -> dict:
        # forms that cannot yield a line (text or strokes missing) are reported here, without a task;
        # an explicit "train" list is a selection: forms outside it are not used, so not reported
        selected_all = splits is None or "train" not in splits
        leftovers = [f.form_id for f in forms if f.form_id not in assignment] if selected_all else []
        if leftovers:
            report.skipped.extend(load_forms(root_path, leftovers)[1].skipped)
        step = max(forms_per_task, 1)
        groups = []  # (split, form ids) per task
        for split in SPLITS:
            ids = sorted(f for f, s in assignment.items() if s == split)
            groups += [(split, ids[i : i + step]) for i in range(0, len(ids), step)]
        paths = [shard_name(version, split, i) for i, (split, _) in enumerate(groups)]
        urls = [storage.url_of(join(storage.dataset_dir(name), p)) for p in paths]
        by_id = {f.form_id: f for f in forms}
        task_bytes = [sum(sizes.get(p, 0) for i in ids for p in _form_files(by_id[i])) for _, ids in groups]
        results = list(track(map_tasks(_parse_task, [(root_path, ids, u) for (_, ids), u in zip(groups, urls)], use_ray),
                             f"preprocess {name}: parse", len(groups), "tasks", sizes=task_bytes))
        for r in results:
            report.skipped.extend(map(tuple, r["skipped"]))
        per_split: dict[str, dict] = {}
        for (split, _), path, r in zip(groups, paths, results):
            entry = per_split.setdefault(split, {"lines": 0, "points": 0, "shards": []})
            if r["lines"]:
                entry["lines"] += r["lines"]
                entry["points"] += r["points"]
                entry["shards"].append({"path": path, "lines": r["lines"], "sha256": r["sha256"]})
        splits_out = {s: e for s, e in per_split.items() if e["lines"]}
        if "train" not in splits_out:
            what = "no usable line" if not splits_out else "no usable line in the train split"
            raise DatasetError(f"{what} under {root_path}; {report.summary()}")
        # train-split mean / std per axis from the tasks' partial sums: var = E[x^2] - E[x]^2
        n, sx, sy, sxx, syy = np.sum([r["sums"] for (s, _), r in zip(groups, results) if s == "train"], axis=0)
        n = max(n, 1)
        mean = np.array([sx, sy]) / n
        std = np.sqrt(np.maximum(np.array([sxx, syy]) / n - mean**2, 0))
        std = np.where(std > 0, std, 1.0)
        text_alphabet = full_alphabet(r["chars"] for r in results) if alphabet == "full" else graves57_alphabet()
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "handwriting",
            "alphabet": text_alphabet.to_json(),
            "alphabet_kind": alphabet,
            "offset_mean": mean.tolist(),
            "offset_std": std.tolist(),
            "splits": splits_out,
            "skipped": _skip_summary(report, root_path),
            "sources": sources,
            "settings": settings,
        }

    manifest = publish(storage, name, fp, build, force)
    if len(report):
        print(f"handwriting dataset {name}: {report.summary()}", file=sys.stderr, flush=True)
    return manifest


# reading ---------------------------------------------------------------------------------
def load_lines(storage: Storage, manifest: dict, split: str, rank: int = 0, world: int = 1) -> list[dict]:
    """The lines of ``split`` for worker ``rank`` of ``world``: a contiguous 1/world share by line
    count, reading (and verifying) only the shards that overlap it. Each line is a dict with form_id,
    line_id, text and offsets (T, 3) float32 (dx, dy, eos) in raw units (row 0 = (0, 0, eos_0))."""
    info = split_info(manifest, split)
    out = []
    for shard, start, stop in rank_slices(info["shards"], "lines", info["lines"], rank, world):
        table = read_shard(storage, manifest, shard).slice(start, stop - start)
        rows = np.array(table.column("offsets").combine_chunks().flatten(), np.float32).reshape(-1, 3)
        columns = {k: table.column(k).to_pylist() for k in ("form_id", "line_id", "text")}
        pieces = np.split(rows, np.cumsum(table.column("n_points").to_numpy())[:-1])
        out += [{k: v[i] for k, v in columns.items()} | {"offsets": o} for i, o in enumerate(pieces)]
    return out
