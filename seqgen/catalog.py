"""What is on a storage root, and what is inside a checkpoint: the library side of ``seqgen runs``,
``seqgen datasets`` and ``seqgen inspect``, and the one place that turns what a user typed into a
loaded model (`find_checkpoint`, `load_model`) and a checkpoint into the dataset it can be
evaluated on (`evaluation_dataset`), with errors that say what is wrong and what to do.

Everything here reads the same files the writers produce (``storage.py`` layout, dataset
``manifest.json``, checkpoint ``manifest.json`` / ``progress.json``) and never imports Ray.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from fsspec.core import url_to_fs

from seqgen import checkpoint as ckpt
from seqgen.checkpoint import CheckpointError
from seqgen.storage import Storage, join


# --------------------------------------------------------------------------------------------
# runs and datasets


@dataclass
class RunInfo:
    name: str
    kind: str  # model kind: text | handwriting_prediction | handwriting_synthesis ('' if unknown)
    steps: int  # step of the newest complete checkpoint (0: none yet)
    max_steps: int | None
    best_metric: str  # valid_bpc (text), valid_loss (handwriting: nats/line), or train_loss
    best: float | None
    best_step: int | None
    checkpoints: int
    updated: str  # ISO time of the newest checkpoint (or the run's config), '' if unknown
    url: str


@dataclass
class DatasetInfo:
    name: str
    kind: str  # text tokenizer (char | byte | word | bigram) or 'handwriting'
    size: int  # training tokens (text) or lines (handwriting)
    unit: str  # 'tokens' | 'lines'
    splits: dict = field(default_factory=dict)  # split -> size in the same unit
    symbols: int = 0  # vocabulary or alphabet size
    updated: str = ""
    url: str = ""


def _leaf(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _modified(fs, path: str) -> str:
    """Last-modified time of ``path`` as ISO-8601 UTC (local files, memory://, s3, gcs), '' if unknown."""
    try:
        info = fs.info(path)
    except (FileNotFoundError, OSError):
        return ""
    for key in ("mtime", "LastModified", "updated", "created", "last_modified"):
        value = info.get(key)
        if isinstance(value, (int, float)):
            value = _dt.datetime.fromtimestamp(value, _dt.timezone.utc)
        elif isinstance(value, str):
            try:
                value = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
        if isinstance(value, _dt.datetime):
            value = value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)
            return value.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return ""


def _read_json(fs, path: str):
    with fs.open(path, "rb") as f:
        return json.loads(f.read())


def best_eval(evals: list[dict], kind: str) -> tuple[str, float | None, int | None]:
    """(metric name, best value, its step) over an evaluation history: bits/char for text,
    nats/line for handwriting (the papers' numbers), CER for a recognizer, the training loss when
    nothing was validated."""
    first = {"text": ["valid_bpc", "valid_loss"], "handwriting_recognition": ["valid_cer"]}.get(kind, ["valid_loss"])
    for metric in first + ["train_loss"]:
        scored = [e for e in evals if isinstance(e.get(metric), (int, float)) and not math.isnan(e[metric])]
        if scored:
            best = min(scored, key=lambda e: e[metric])
            return metric, float(best[metric]), best.get("step")
    return "", None, None


def run_info(storage: Storage, name: str) -> RunInfo:
    """One run's summary from its newest complete checkpoint (and ``config.json`` beside the run)."""
    fs, run_dir = storage.fs, storage.run_dir(name)
    url = storage.url_of(run_dir)
    found = ckpt.list_checkpoints(url)
    config = {}
    for path in ([join(url_to_fs(found[-1])[1], "config.json")] if found else []) + [join(run_dir, "config.json")]:
        try:
            config = _read_json(fs, path)
            break
        except (FileNotFoundError, ValueError):
            continue
    kind = config.get("model", {}).get("kind", "")
    progress = {}
    if found:
        try:
            progress = _read_json(fs, join(url_to_fs(found[-1])[1], "progress.json"))
        except (FileNotFoundError, ValueError):
            pass
    metric, best, best_step = best_eval(progress.get("evals", []), kind)
    latest = join(url_to_fs(found[-1])[1], "manifest.json") if found else join(run_dir, "config.json")
    return RunInfo(name, kind, int(progress.get("step", 0)), config.get("train", {}).get("max_steps"),
                   metric, best, best_step, len(found), _modified(fs, latest), url)


def list_runs(storage: Storage) -> list[RunInfo]:
    """Every run directory under ``<root>/runs/`` (tune trials included), by name."""
    fs, root = storage.fs, storage.runs_dir()
    if not fs.exists(root):
        return []
    names = sorted(_leaf(p) for p in fs.ls(root, detail=False) if fs.isdir(p))
    return [run_info(storage, n) for n in names if not n.startswith(".")]


def dataset_info(storage: Storage, manifest: dict) -> DatasetInfo:
    handwriting = manifest.get("kind") == "handwriting"
    unit = "lines" if handwriting else "tokens"
    splits = {s: int(v.get(unit, 0)) for s, v in manifest.get("splits", {}).items()}
    if handwriting:
        symbols = len(json.loads(manifest["alphabet"])["chars"]) if manifest.get("alphabet") else 0
    else:
        symbols = int(manifest.get("vocab_size", 0))
    path = join(storage.dataset_dir(manifest["name"]), "manifest.json")
    return DatasetInfo(manifest["name"], "handwriting" if handwriting else manifest.get("tokenizer", "text"),
                       splits.get("train", 0), unit, splits, symbols,
                       manifest.get("created") or _modified(storage.fs, path), storage.url_of(storage.dataset_dir(manifest["name"])))


def list_datasets(storage: Storage) -> list[DatasetInfo]:
    """Every complete dataset (one with a manifest) under ``<root>/datasets/``, by name."""
    fs, root = storage.fs, storage.path("datasets")
    if not fs.exists(root):
        return []
    out = []
    for p in sorted(fs.ls(root, detail=False)):
        manifest_path = join(p, "manifest.json")
        if fs.isdir(p) and fs.exists(manifest_path):
            try:
                out.append(dataset_info(storage, _read_json(fs, manifest_path)))
            except (ValueError, KeyError):  # a foreign or damaged manifest: listed, not fatal
                out.append(DatasetInfo(_leaf(p), "unreadable manifest", 0, "", url=storage.url_of(p)))
    return out


# --------------------------------------------------------------------------------------------
# checkpoints: find, load, inspect

#: the handwriting synthesis model shipped in the package: what `seqgen write` and `seqgen serve`
#: use when given no checkpoint
BUNDLED_HANDWRITING = Path(__file__).parent / "assets" / "handwriting"


def bundled_handwriting() -> str:
    """The bundled handwriting model's checkpoint URL; `CheckpointError` if this install has none."""
    if not (BUNDLED_HANDWRITING / ckpt.MANIFEST).exists():
        raise CheckpointError(f"no bundled handwriting model in this install ({BUNDLED_HANDWRITING}): "
                              "name a checkpoint")
    return str(BUNDLED_HANDWRITING)


#: the models shipped in the package, by the name ``bundled:NAME`` gives them: the Tiny Shakespeare
#: character model (docs/serving.md says how it was trained) and the handwriting synthesis model
BUNDLED = {"shakespeare": Path(__file__).parent / "assets" / "shakespeare", "handwriting": BUNDLED_HANDWRITING}
BUNDLED_PREFIX = "bundled:"


def bundled(name: str) -> str:
    """The checkpoint URL of bundled model ``name``; `CheckpointError` naming the bundled models."""
    path = BUNDLED.get(name)
    if path is None or not (path / ckpt.MANIFEST).exists():
        shipped = ", ".join(BUNDLED_PREFIX + n for n, p in BUNDLED.items() if (p / ckpt.MANIFEST).exists())
        raise CheckpointError(f"no bundled model {name!r} in this install (bundled: {shipped or 'none'})")
    return str(path)


def find_checkpoint(storage: Storage, ref: str) -> str:
    """A checkpoint URL from what a user typed: ``bundled:NAME`` (`BUNDLED`), a checkpoint
    directory, a run directory (its best checkpoint) or a run name on ``storage``;
    `CheckpointError` saying what to give instead."""
    hint = "give a checkpoint directory, a run directory or a run name (`seqgen runs` lists them)"
    if ref.startswith(BUNDLED_PREFIX):
        return bundled(ref[len(BUNDLED_PREFIX):])
    if "/" not in ref and "://" not in ref:  # a run name
        run_url = storage.url_of(storage.run_dir(ref))
        if not storage.exists(storage.run_dir(ref)):
            raise CheckpointError(f"no run {ref!r} on {storage.url} and no such directory: {hint}")
        if not ckpt.list_checkpoints(run_url):
            raise CheckpointError(f"run {ref!r} has no complete checkpoint yet ({run_url}): train it first")
        return ckpt.best_checkpoint(run_url)
    fs, path = url_to_fs(ref)
    if not fs.exists(path):
        raise CheckpointError(f"checkpoint not found: {ref}: {hint}")
    if fs.isfile(path):
        raise CheckpointError(f"{ref} is a file, not a checkpoint directory: {hint}")
    if fs.exists(join(path, ckpt.MANIFEST)):
        return ref
    if not ckpt.list_checkpoints(ref):
        raise CheckpointError(f"{ref} is not a checkpoint (no manifest.json) and holds no complete "
                              f"checkpoint_* directory: {hint}")
    return ckpt.best_checkpoint(ref)


def load_model(url: str, device: str = "cpu"):
    """(model in eval mode, LoadedCheckpoint) of checkpoint ``url``; `CheckpointError` for a damaged
    checkpoint or a ``model.pt`` that does not fit its ``config.json``."""
    from seqgen.models import build_model

    loaded = ckpt.load(url)
    try:
        model = build_model(loaded.config, loaded.meta)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"checkpoint {url}: config.json / meta.json do not describe a model ({e})") from e
    try:
        model.load_state_dict(loaded.model_state)
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise CheckpointError(f"checkpoint {url}: model.pt does not fit its config.json ({detail[:200]}...): "
                              "the files come from different runs; use a checkpoint as training wrote it") from e
    return model.to(device).eval(), loaded


def find_and_load_model(storage: Storage, ref: str, device: str = "cpu"):
    """(model in eval mode, LoadedCheckpoint) for what a user typed (`find_checkpoint`)."""
    return load_model(find_checkpoint(storage, ref), device)


def evaluation_dataset(storage: Storage, loaded: ckpt.LoadedCheckpoint, dataset: str | None, split: str) -> dict:
    """The manifest of the dataset checkpoint ``loaded`` is evaluated on (default: the one it was
    trained on), once it is one the model can read: of its kind (text or handwriting), with
    ``split``, and with the model's vocabulary (text) or alphabet (a model that reads or writes
    text); ValueError saying what to pass instead."""
    from seqgen.data.text import load_manifest

    manifest = load_manifest(storage, dataset or loaded.config.dataset)
    name, data_kind, kind = manifest["name"], manifest.get("kind", "text"), loaded.config.model.kind
    if (kind == "text") != (data_kind == "text"):
        raise ValueError(f"checkpoint {loaded.url} is a {kind} model but dataset {name!r} is a {data_kind} "
                         "dataset: pass --dataset with one of its kind")
    if split not in manifest["splits"]:
        raise ValueError(f"dataset {name!r} has no {split!r} split (it has {', '.join(sorted(manifest['splits']))}): "
                         "pass --split")
    if data_kind == "text" and manifest["vocab"] != loaded.meta["vocab"]:
        raise ValueError(f"dataset {name!r} has another vocabulary than checkpoint {loaded.url}: its ids "
                         "would mean other symbols; evaluate on the dataset the model was trained on")
    if data_kind != "text" and loaded.meta.get("alphabet"):  # prediction networks read no text
        from seqgen.handwriting.iam import Alphabet
        from seqgen.handwriting.models import meta_alphabet

        # lines are encoded with the model's own alphabet, so any dataset whose characters it has will do
        # (e.g. a user's own lines, `seqgen preprocess --handwriting --data-dir DIR`)
        theirs = Alphabet.from_json(manifest["alphabet"]).chars[1:]
        if missing := meta_alphabet(loaded.meta).unknown_chars("".join(theirs)):
            raise ValueError(f"dataset {name!r} has characters that checkpoint {loaded.url} cannot read or "
                             f"write: {missing}; evaluate on a dataset within its alphabet")
    return manifest


def parameter_count(model_state: dict) -> int:
    return int(sum(t.numel() for t in model_state.values() if hasattr(t, "numel")))


def inspect_checkpoint(url: str) -> dict:
    """Everything a user asks of a checkpoint: config, step, metrics, parameter count, dataset,
    vocabulary or alphabet, file sizes. JSON-serialisable."""
    from seqgen.config import to_dict

    loaded = ckpt.load(url)
    sizes = {name: entry["size"] for name, entry in ckpt.read_manifest(url)["files"].items()}
    cfg, meta, progress = loaded.config, loaded.meta, loaded.progress
    evals = progress.get("evals", [])
    metric, best, best_step = best_eval(evals, cfg.model.kind)
    out = {
        "checkpoint": url,
        "kind": cfg.model.kind,
        "run_name": cfg.run_name,
        "dataset": meta.get("dataset", cfg.dataset),
        "step": int(progress.get("step", 0)),
        "started_at_steps": progress.get("starts", []),  # [0, k, ...]: resumed at step k, ...
        "parameters": parameter_count(loaded.model_state),
        "metrics": evals[-1] if evals else {},
        "best": {"metric": metric, "value": best, "step": best_step},
        "resumable": loaded.workers > 0,
        "files": sizes,
        "total_bytes": sum(sizes.values()),
        "config": to_dict(cfg),
    }
    if "vocab" in meta:
        v = meta["vocab"]
        out["vocabulary"] = {"kind": v["kind"], "size": len(v["symbols"]), "unk": v.get("unk"), "symbols": v["symbols"]}
    if meta.get("alphabet"):
        a = meta["alphabet"]
        a = json.loads(a) if isinstance(a, str) else a
        out["alphabet"] = {"size": len(a["chars"]), "chars": "".join(a["chars"][1:]), "fallback": a.get("fallback")}
    if "offset_mean" in meta:
        out["offset_stats"] = {"mean": meta["offset_mean"], "std": meta["offset_std"]}
    return out
