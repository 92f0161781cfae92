"""Copy a checkpoint's inference files (no optimiser state) into the package, as the bundled
handwriting synthesis model (`seqgen/assets/handwriting`) and recognizer (`seqgen/assets/recognizer`) are made.

    python docs/bundle_checkpoint.py CHECKPOINT seqgen/assets/recognizer
    python docs/bundle_checkpoint.py CHECKPOINT seqgen/assets/handwriting --fp16 --name handwriting-bundled

``--fp16`` stores the floating-point weights as float16 (half the bytes); loading casts them back
to the model's float32 parameters (`load_state_dict` copies into them), so only the rounding of
the weights changes: measure the bundle with it before shipping it (docs/handwriting.md does).
``--name`` renames the run (the name `/info`, `/v1/models` and the page show, and `model` picks).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

from seqgen import checkpoint as ckpt


def bundle(url: str, dest: Path, fp16: bool = False, name: str | None = None) -> int:
    """Write checkpoint ``url``'s config (run ``name`` if given), meta, weights (float16 if
    ``fp16``) and progress to ``dest``; its size in bytes."""
    loaded = ckpt.load(url)
    cfg = dataclasses.replace(loaded.config, run_name=name) if name else loaded.config
    weights = loaded.model_state
    if fp16:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    shutil.rmtree(dest, ignore_errors=True)
    ckpt.save(str(dest), cfg, loaded.meta, weights, {}, loaded.progress)
    return sum(f.stat().st_size for f in dest.iterdir())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("dest", type=Path)
    p.add_argument("--fp16", action="store_true", help="store the weights as float16")
    p.add_argument("--name", help="the bundle's run name")
    a = p.parse_args()
    print(f"bundled {a.checkpoint} -> {a.dest} ({bundle(a.checkpoint, a.dest, a.fp16, a.name) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
