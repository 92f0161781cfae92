"""Copy a checkpoint's inference files (no optimiser state) into the package, as the bundled
handwriting synthesis model (`seqgen/assets/handwriting`) and recognizer (`seqgen/assets/recognizer`) are made.

    python docs/bundle_checkpoint.py CHECKPOINT seqgen/assets/recognizer
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from seqgen import checkpoint as ckpt


def bundle(url: str, dest: Path) -> int:
    """Write checkpoint ``url``'s config, meta, weights and progress to ``dest``; its size in bytes."""
    loaded = ckpt.load(url)
    shutil.rmtree(dest, ignore_errors=True)
    ckpt.save(str(dest), loaded.config, loaded.meta, loaded.model_state, {}, loaded.progress)
    return sum(f.stat().st_size for f in dest.iterdir())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("dest", type=Path)
    a = p.parse_args()
    print(f"bundled {a.checkpoint} -> {a.dest} ({bundle(a.checkpoint, a.dest) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
