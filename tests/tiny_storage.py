"""Tiny storage roots for the CLI, catalog, evaluate and export tests, made in-process without Ray:
a char dataset and a text checkpoint, a synthetic IAM-OnDB dataset and handwriting prediction /
synthesis checkpoints. Checkpoints are written by ``seqgen.checkpoint.save`` exactly as training
writes them (untrained weights: the tests check plumbing and numbers' consistency, not quality)."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import torch

from seqgen import checkpoint as ckpt
from seqgen import config
from seqgen.config import to_dict
from seqgen.data.text import TextSpec, chars_per_token, preprocess_text
from seqgen.storage import Storage, join

TEXT = Path(__file__).parents[1] / "seqgen" / "assets" / "tinyshakespeare.txt"


def new_storage(tag: str) -> Storage:
    return Storage.from_url(f"memory://{tag}-{uuid.uuid4().hex}")


def shakespeare_storage(url: str) -> Storage:
    """A storage root at ``url`` with the bundled Tiny Shakespeare preprocessed (the training tests'
    dataset)."""
    from seqgen.data.presets import text_preset

    st = Storage.from_url(url)
    preprocess_text(st, "shakespeare", text_preset("shakespeare"), use_ray=False)
    return st


def text_dataset(st: Storage, tmp: Path, name: str = "tiny", nbytes: int = 20_000) -> dict:
    src = tmp / f"{name}.txt"
    src.write_bytes(TEXT.read_bytes()[:nbytes])
    spec = TextSpec("char", {"train": [str(src)]}, valid_fraction=0.1, test_fraction=0.1)
    return preprocess_text(st, name, spec, use_ray=False)


def iam_root(root: Path, forms: int = 4, seed: int = 0) -> Path:
    """``forms`` IAM-OnDB forms x 3 random-walk lines of 8..60 points."""
    rng = np.random.default_rng(seed)
    for f in range(forms):
        form = f"x0{f}-000"
        (root / "ascii" / form).mkdir(parents=True)
        (root / "ascii" / form / f"{form}.txt").write_text("CSR:\n" + "\n".join(f"f{f} l{k}" + "ab"[:k] for k in range(3)))
        (root / "lineStrokes" / form).mkdir(parents=True)
        for k in range(1, 4):
            pts = np.cumsum(rng.normal(5, 3, (int(rng.integers(8, 60)), 2)), 0)
            body = "".join(f'<Point x="{x:.1f}" y="{y:.1f}"/>' + ("</Stroke><Stroke>" if i % 9 == 8 else "")
                           for i, (x, y) in enumerate(pts))
            (root / "lineStrokes" / form / f"{form}-{k:02d}.xml").write_text(
                f"<WhiteboardCaptureSession><StrokeSet><Stroke>{body}</Stroke></StrokeSet></WhiteboardCaptureSession>")
    return root


def handwriting_dataset(st: Storage, tmp: Path, name: str = "hw") -> dict:
    from seqgen.handwriting.dataset import preprocess_handwriting

    return preprocess_handwriting(st, name, str(iam_root(tmp / f"iam-{name}")), valid_fraction=0.25,
                                  test_fraction=0.25, use_ray=False)


def save_checkpoint(st: Storage, run: str, cfg, meta: dict, step: int = 2, evals: list[dict] | None = None,
                    seed: int = 0) -> str:
    """Build the model ``cfg`` describes and save it as ``<run>/checkpoint_<step>``; returns its URL."""
    from seqgen.models import build_model

    torch.manual_seed(seed)
    model = build_model(cfg, meta)
    url = st.url_of(join(st.run_dir(run), ckpt.checkpoint_name(step)))
    evals = evals if evals is not None else [{"step": step, "score": 1.5, "valid_loss": 1.5, "train_loss": 1.7}]
    progress = {"step": step, "losses": [2.0] * step, "evals": evals, "best": 1.5, "bad_evals": 0}
    st.write_json_atomic(join(st.run_dir(run), "config.json"), to_dict(cfg))
    ckpt.save(url, cfg, meta, model.state_dict(), {}, progress)
    return url


def text_checkpoint(st: Storage, manifest: dict, run: str = "tiny-run", hidden: int = 16, **kw) -> str:
    cfg = config.load(None, [f"run_name={run}", f"dataset={manifest['name']}", f"model.hidden_size={hidden}",
                             "model.num_layers=2", "train.max_steps=10"])
    meta = {"kind": "text", "dataset": manifest["name"], "vocab": manifest["vocab"],
            "chars_per_token": chars_per_token(manifest)}
    return save_checkpoint(st, run, cfg, meta, **kw)


def handwriting_checkpoint(st: Storage, manifest: dict, kind: str = "prediction", run: str | None = None, **kw) -> str:
    run = run or f"hw-{kind}"
    cfg = config.load(None, [f"run_name={run}", f"model.kind=handwriting_{kind}", f"dataset={manifest['name']}",
                             "model.hidden_size=8", "model.num_layers=2", "model.mixture_components=3",
                             "model.window_components=2", "train.max_steps=10"])
    meta = {"kind": cfg.model.kind, "dataset": manifest["name"],
            "alphabet": manifest["alphabet"] if kind == "synthesis" else None,
            "offset_mean": manifest["offset_mean"], "offset_std": manifest["offset_std"]}
    if kind == "synthesis":
        meta["points_per_char"] = 5.0
    return save_checkpoint(st, run, cfg, meta, **kw)
