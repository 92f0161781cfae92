"""docs/img/legibility-biases.png: one sentence written at each bias by a synthesis model, with the
recognizer's reading of each line under it (docs/handwriting.md, "Legibility").

    python docs/make_legibility_figure.py [SYNTHESIS_CHECKPOINT] [--recognizer CKPT] [--out PNG]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from matplotlib.figure import Figure

from seqgen.catalog import BUNDLED_HANDWRITING, load_model
from seqgen.handwriting import legibility
from seqgen.handwriting.iam import offsets_to_strokes

TEXT = "Pack my box with five dozen liquor jugs"
BIASES = (0.0, 0.5, 0.75, 1.0, 2.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", nargs="?", default=str(BUNDLED_HANDWRITING))
    p.add_argument("--recognizer", default=None)
    p.add_argument("--out", default=str(Path(__file__).parent / "img" / "legibility-biases.png"))
    a = p.parse_args()
    synth, s = load_model(a.checkpoint)
    reader, r = load_model(a.recognizer or legibility.bundled_recognizer())
    fig = Figure(figsize=(10, 1.6 * len(BIASES)))
    for i, bias in enumerate(BIASES):
        (w,) = legibility.write_best(synth, s.meta, reader, r.meta, [TEXT], bias, seed=0)
        ax = fig.add_subplot(len(BIASES), 1, i + 1)
        for stroke in offsets_to_strokes(w.result.offsets):
            ax.plot(stroke[:, 0], stroke[:, 1], color="black", linewidth=1.2, solid_capstyle="round")
        ax.set_aspect("equal")
        ax.invert_yaxis()
        ax.axis("off")
        ax.set_title(f"bias {bias:g}: read as \u201c{w.reading}\u201d (CER {w.cer:.2f})", fontsize=10, loc="left")
    fig.tight_layout()
    fig.savefig(a.out, dpi=90)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
