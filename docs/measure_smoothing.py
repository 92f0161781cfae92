"""Does drawing strokes as curves (`render.catmull_rom`) look closer to the pen than straight segments?

Through every other point of each stroke of the validation lines, the line is drawn both ways and
compared with where the pen really was halfway: the skipped point, against the midpoint of the
straight segment and against the curve at t = 1/2 (docs/handwriting.md, "How a page looks").

    python docs/measure_smoothing.py --storage STORE [--dataset iam] [--split valid] [--picture PNG]

``--picture``: a line the bundled model writes, drawn both ways (PNG through resvg), top straight,
bottom curved: docs/img/smoothing.png.
"""

from __future__ import annotations

import argparse

import numpy as np

from seqgen.data.text import load_manifest
from seqgen.handwriting.dataset import load_lines
from seqgen.handwriting.iam import offsets_to_strokes
from seqgen.handwriting.render import catmull_rom
from seqgen.storage import Storage


def halfway_errors(stroke: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(straight, curve): distances of the skipped points from the two drawings of the kept ones."""
    kept, skipped = stroke[::2], stroke[1::2]
    n = min(len(skipped), len(kept) - 1)
    c1, c2 = catmull_rom(kept)
    a, b = kept[:-1][:n], kept[1:][:n]
    straight = (a + b) / 2
    curve = (a + 3 * c1[:n] + 3 * c2[:n] + b) / 8  # the cubic Bezier at t = 1/2
    return np.hypot(*(skipped[:n] - straight).T), np.hypot(*(skipped[:n] - curve).T)


def picture(out: str) -> None:
    """A written line, straight segments above and curves below, as rendered for a page 1000 px wide."""
    import io

    import matplotlib.image

    from seqgen.catalog import BUNDLED_HANDWRITING, load_model
    from seqgen.handwriting.render import strokes_svg, svg_png
    from seqgen.handwriting.sampling import synthesize

    model, loaded = load_model(str(BUNDLED_HANDWRITING))
    (line,) = synthesize(model, loaded.meta, ["a quick brown fox"], bias=0.75, seed=0)
    rows = [matplotlib.image.imread(io.BytesIO(svg_png(strokes_svg(line.offsets, width=1000, stroke_width=2,
                                                                   smooth=smooth)))) for smooth in (False, True)]
    matplotlib.image.imsave(out, np.concatenate(rows))
    print(f"wrote {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--storage", required=True)
    p.add_argument("--dataset", default="iam")
    p.add_argument("--split", default="valid")
    p.add_argument("--picture", default=None, help="also draw a written line both ways into this PNG")
    a = p.parse_args()
    if a.picture:
        picture(a.picture)
    st = Storage.from_url(a.storage)
    lines = load_lines(st, load_manifest(st, a.dataset), a.split)
    pairs = [halfway_errors(s) for line in lines for s in offsets_to_strokes(line["offsets"]) if len(s) >= 7]
    straight, curve = (np.concatenate(x) for x in zip(*pairs))
    print(f"{len(straight)} skipped points of {len(lines)} lines: mean distance straight {straight.mean():.2f}, "
          f"curve {curve.mean():.2f} data units; median {np.median(straight):.2f} vs {np.median(curve):.2f}; "
          f"the curve is closer for {100 * (curve < straight).mean():.1f}%")


if __name__ == "__main__":
    main()
