"""Regenerate the pictures of docs/regularisation.md from a staged search's results.

    python docs/make_regularisation_figures.py STORAGE SEARCH [--extra RUN=LABEL ...] [--name NAME]

STORAGE is the storage root the search ran on, SEARCH its name (``seqgen tune SEARCH --staged``);
``--extra`` adds runs trained outside the search from the same stage-1 checkpoint (``seqgen train
... train.init_from=...``) to the zoomed validation panel.
Reads ``<STORAGE>/tune/<SEARCH>/results.csv`` (one row per trial, with its stage) and each trial
run's ``metrics.csv``; writes

* ``docs/img/<NAME>-curves.png`` (NAME: ``regularisation`` unless given): stage 1's train and validation bits/char, then every
  stage-2 trial's, laid after the stage-1 step its checkpoint was taken at, then the stage-2
  validation curves (and the extra runs') on a zoomed axis;
* ``docs/img/<NAME>-search.png``: a copy of the search's own ``curves.png``.

The train curve is the running mean of the training minibatch loss between evaluations, measured
with the trial's regulariser active (dropout masks, sampled weight noise), so under noise it is
not the noise-free training loss.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

IMG = Path(__file__).parent / "img"


def read_metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [row for row in csv.DictReader(f) if row.get("valid_bpc")]


def start_step(run_dir: Path) -> int:
    """The step of the stage-1 checkpoint a stage-2 run was initialised from (0 for stage 1)."""
    init = json.loads((run_dir / "config.json").read_text())["train"]["init_from"]
    if not init:
        return 0
    evals = json.loads((Path(init) / "progress.json").read_text())["evals"]
    return int(evals[-1]["step"])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("storage")
    p.add_argument("search")
    p.add_argument("--extra", action="append", default=[], help="RUN=LABEL")
    p.add_argument("--name", default="regularisation", help="file name prefix of the pictures in docs/img/")
    a = p.parse_args()
    root, search_dir = Path(a.storage), Path(a.storage) / "tune" / a.search
    with open(search_dir / "results.csv", newline="") as f:
        trials = list(csv.DictReader(f))

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.8), dpi=100)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    offset = 0
    for i, trial in enumerate(trials):
        run_dir = root / "runs" / trial["trial"]
        rows = read_metrics(run_dir)
        first = start_step(run_dir)
        steps = [first + int(r["step"]) for r in rows]
        label = trial["setting"].split(", optim.")[0]  # the regulariser, not the search's fixed keys
        ax = ax1 if trial["stage"] == "1" else ax2
        c = colours[i % len(colours)]
        ax.plot(steps, [float(r["valid_bpc"]) for r in rows], color=c, marker="o", markersize=2.5,
                label=f"{label}: valid")
        ax.plot(steps, [float(r["train_loss"]) for r in rows], color=c, linestyle="--", linewidth=1,
                label=f"{label}: train")
        if trial["stage"] != "1":
            offset = first
            ax3.plot(steps, [float(r["valid_bpc"]) for r in rows], color=c, marker="o", markersize=2.5, label=label)
        else:
            ax3.axhline(min(float(r["valid_bpc"]) for r in rows), color=c, linestyle=":", label=f"{label} (best)")
    for j, extra in enumerate(a.extra):
        run, label = extra.split("=", 1)
        rows = read_metrics(root / "runs" / run)
        first = start_step(root / "runs" / run)
        ax3.plot([first + int(r["step"]) for r in rows], [float(r["valid_bpc"]) for r in rows],
                 color=colours[(len(trials) + j) % len(colours)], linestyle="--", linewidth=1, label=label)
    for ax, title in ((ax1, "stage 1: no regularisation, early stopping"),
                      (ax2, "stage 2: retrained from stage 1's best checkpoint"),
                      (ax3, "validation only, zoomed")):
        if offset:
            ax.axvline(offset, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("training step (batch 32 x 100 characters)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_ylabel("bits per character")
    ax1.set_ylim(1.0, 3.0)
    ax2.set_ylim(1.0, 3.0)
    fig.tight_layout()
    IMG.mkdir(exist_ok=True)
    curves, search = IMG / f"{a.name}-curves.png", IMG / f"{a.name}-search.png"
    fig.savefig(curves)
    plt.close(fig)
    shutil.copyfile(search_dir / "curves.png", search)
    print(f"wrote {curves} and {search}")


if __name__ == "__main__":
    main()
