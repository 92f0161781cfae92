"""Does it matter how densely a drawn prime was sampled, and does `prime.match_density` undo it?

For every validation form (writer) with two lines, line B is scored after the writer's line A drawn
as a device would report it: at IAM-OnDB's own rate, with every 2nd or 3rd point (a mouse reports a
point per screen frame) and with a point added halfway along every step (a fast tablet). Each
drawing reaches the network through the prime path of ``POST /write`` (`prime.prime_from_points`),
once as it is and once resampled to the training data's density (docs/handwriting.md).

    python docs/measure_prime_density.py --storage STORE [--checkpoint CKPT] [--split valid]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from seqgen.catalog import BUNDLED_HANDWRITING, evaluation_dataset, load_model
from seqgen.handwriting.dataset import load_lines
from seqgen.handwriting.evaluate import nats_per_point
from seqgen.handwriting.iam import offsets_to_strokes
from seqgen.handwriting.prime import prime_from_points, strokes_to_points
from seqgen.handwriting.sampling import primed
from seqgen.storage import Storage

DEVICES = {"as recorded": 1, "every 2nd point": 2, "every 3rd point": 3, "twice as dense": 0.5}


def as_device(stroke: np.ndarray, k: float) -> np.ndarray:
    """Every k-th point of ``stroke`` (and its last), or for k < 1 1/k points per step, linearly."""
    if k >= 1:
        return stroke[sorted({*range(0, len(stroke), int(k)), len(stroke) - 1})]
    n = round(1 / k)
    t = np.arange((len(stroke) - 1) * n + 1) / n
    return np.column_stack([np.interp(t, np.arange(len(stroke)), stroke[:, d]) for d in (0, 1)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--storage", required=True)
    p.add_argument("--checkpoint", default=str(BUNDLED_HANDWRITING))
    p.add_argument("--split", default="valid")
    a = p.parse_args()
    model, loaded = load_model(a.checkpoint)
    st = Storage.from_url(a.storage)
    forms: dict[str, list[dict]] = {}
    for line in load_lines(st, evaluation_dataset(st, loaded, None, a.split), a.split):
        forms.setdefault(line["form_id"], []).append(line)
    pairs = [(ls[0], ls[1]) for ls in forms.values() if len(ls) >= 2]
    as_is = {k: v for k, v in loaded.meta.items() if k != "pen_step"}  # no density to match
    out = {"forms": len(pairs), "unprimed": float(nats_per_point(model, loaded.meta, [b for _, b in pairs]).mean())}
    for device, k in DEVICES.items():
        row = {}
        for how, meta in (("as drawn", as_is), ("resampled", loaded.meta)):
            own = []
            for line_a, line_b in pairs:
                points = strokes_to_points([as_device(s, k) for s in offsets_to_strokes(line_a["offsets"])])
                own.append(primed({**line_a, "offsets": prime_from_points(points, line_a["text"], meta)[0]}, line_b))
            row[how] = float(nats_per_point(model, loaded.meta, [j for j, _ in own], [c for _, c in own]).mean())
        out[device] = row
        print(f"{device:>16}: B after its writer's line A {row['as drawn']:.3f} nats/point, "
              f"resampled {row['resampled']:.3f}", flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
