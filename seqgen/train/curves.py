"""The evaluation history beside a run: ``metrics.csv`` and a PNG of the learning curves."""

from __future__ import annotations

import csv
import io

from seqgen.storage import Storage, join


def write_curves(storage: Storage, run_name: str, evals: list[dict], plot: bool = True) -> None:
    """metrics.csv always; curves.png when ``plot`` (plotting costs ~0.1-1 s, so the loop
    redraws it at most every half minute and at the end)."""
    if not evals:
        return
    run_dir = storage.run_dir(run_name)
    keys = sorted({k for e in evals for k in e})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(evals)
    storage.write_bytes_atomic(join(run_dir, "metrics.csv"), buf.getvalue().encode())
    if plot:
        storage.write_bytes_atomic(join(run_dir, "curves.png"), _plot(run_name, evals))


def _plot(title: str, evals: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    steps = [e["step"] for e in evals]
    for key in ("train_loss", "valid_loss"):
        points = [(s, e[key]) for s, e in zip(steps, evals) if key in e]
        if points:
            ax.plot(*zip(*points), marker="o", markersize=3, label=key.replace("_", " "))
    ax.set_xlabel("step")
    ax.set_ylabel("loss (bits per token; nats per sequence for handwriting)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
