"""Regenerate docs/img/ and the bundled model from a synthesis run.

    python docs/make_handwriting_figures.py RUN_DIR_OR_CHECKPOINT [--bundle [--fp16]]

--bundle also writes the checkpoint's inference files (no optimiser state) to
seqgen/assets/handwriting/ as the run "handwriting-bundled", the model `seqgen write` uses by
default; --fp16 stores its weights as float16 (docs/bundle_checkpoint.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # docs/bundle_checkpoint.py
from bundle_checkpoint import bundle  # noqa: E402

from seqgen.handwriting.render import phi_heatmap_png, strokes_png
from seqgen.handwriting.sampling import synthesize
from seqgen.handwriting.styles import from_sjvasquez
from seqgen.catalog import find_checkpoint, load_model
from seqgen.storage import Storage

DOCS = Path(__file__).parent / "img"
ASSET = Path(__file__).resolve().parents[1] / "seqgen" / "assets" / "handwriting"
TEXT = "a quick brown fox jumps"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("checkpoint")
    p.add_argument("--bundle", action="store_true")
    p.add_argument("--fp16", action="store_true")
    a = p.parse_args()
    url = find_checkpoint(Storage.from_url("/"), a.checkpoint)
    model, loaded = load_model(url)
    DOCS.mkdir(exist_ok=True)
    for bias in (0.0, 0.15, 0.75, 2.0):
        rows = synthesize(model, loaded.meta, [TEXT, "handwriting synthesis"], bias=bias, seed=0)
        (DOCS / f"write-bias-{bias}.png").write_bytes(strokes_png([r.offsets for r in rows]))
    first = synthesize(model, loaded.meta, [TEXT], bias=0.75, seed=0)[0]
    (DOCS / "phi.png").write_bytes(phi_heatmap_png(first.phi, first.text))
    for style in (3, 9):
        prime = from_sjvasquez(style, loaded.meta)
        rows = synthesize(model, loaded.meta, [TEXT], bias=1.0, seed=0, prime=prime)
        (DOCS / f"write-style-{style}.png").write_bytes(strokes_png([prime[0], rows[0].offsets]))
    if a.bundle:
        size = bundle(url, ASSET, a.fp16, "handwriting-bundled")
        print(f"bundled {url} -> {ASSET} ({size / 1e6:.1f} MB)")
    print(f"figures in {DOCS}; validation: {loaded.progress['evals'][-1]}")


if __name__ == "__main__":
    main()
