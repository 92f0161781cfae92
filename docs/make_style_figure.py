"""docs/img/style-transfer.png: three validation writers, each with their real line B and what a
synthesis model writes for B's text after being primed with the writer's line A (docs/handwriting.md).
With ``--drawn`` (docs/img/style-transfer-drawn.png) line A primes as a drawing of it would on the
page or through ``POST /write``'s ``prime`` (`seqgen.handwriting.prime.as_drawn`), and each title
gives line B's nats per point alone and after the prime (`evaluate.style_transfer`, the numbers of
``seqgen evaluate --style-transfer --drawn``).

    python docs/make_style_figure.py [SYNTHESIS_CHECKPOINT] --storage STORE [--dataset iam] [--drawn] [--out PNG]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from matplotlib.figure import Figure

from seqgen.catalog import BUNDLED_HANDWRITING, load_model
from seqgen.data.text import load_manifest
from seqgen.handwriting.dataset import load_lines
from seqgen.handwriting.evaluate import style_transfer
from seqgen.handwriting.iam import offsets_to_strokes
from seqgen.handwriting.prime import as_drawn
from seqgen.handwriting.sampling import synthesize
from seqgen.storage import Storage


def _draw(ax, offsets, title: str) -> None:
    for stroke in offsets_to_strokes(offsets):
        ax.plot(stroke[:, 0], stroke[:, 1], color="black", linewidth=1.0, solid_capstyle="round")
    ax.set_aspect("equal")
    ax.invert_yaxis()
    ax.axis("off")
    ax.set_title(title, fontsize=9, loc="left")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", nargs="?", default=str(BUNDLED_HANDWRITING))
    p.add_argument("--storage", required=True)
    p.add_argument("--dataset", default="iam")
    p.add_argument("--drawn", action="store_true", help="prime with line A as drawn (scaled to the training size)")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    a.out = a.out or str(Path(__file__).parent / "img" / f"style-transfer{'-drawn' if a.drawn else ''}.png")
    model, loaded = load_model(a.checkpoint)
    st = Storage.from_url(a.storage)
    forms: dict[str, list[dict]] = {}
    for line in load_lines(st, load_manifest(st, a.dataset), "valid"):
        forms.setdefault(line["form_id"], []).append(line)
    writers = [ls[:2] for ls in forms.values() if len(ls) >= 2][:3]
    scores = {}
    if a.drawn:
        report = style_transfer(model, loaded.meta, [line for ls in forms.values() for line in ls], drawn=True)
        scores = {row["form"]: row for row in report["per_form"]}
    fig = Figure(figsize=(10, 2.2 * len(writers)))
    for i, (line_a, line_b) in enumerate(writers):
        prime = as_drawn(line_a, loaded.meta) if a.drawn else line_a
        (written,) = synthesize(model, loaded.meta, [line_b["text"]], bias=0.75, seed=0,
                                prime=(prime["offsets"], prime["text"]))
        row = scores.get(line_b["form_id"])
        score = f" (nats/point: {row['unprimed']:.3f} alone, {row['own_prime']:.3f} after {line_a['line_id']})" if row else ""
        _draw(fig.add_subplot(2 * len(writers), 1, 2 * i + 1), line_b["offsets"],
              f"writer {line_b['form_id']}: the real line {line_b['line_id']}{score}")
        _draw(fig.add_subplot(2 * len(writers), 1, 2 * i + 2), written.offsets,
              f"the model, primed with {line_a['line_id']}{' as drawn' if a.drawn else ''} (bias 0.75)")
    fig.tight_layout()
    fig.savefig(a.out, dpi=80)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
