"""Regenerate docs/img/curves-shakespeare.png: the learning curves of a short real training run.

    python docs/make_curves.py [--storage DIR] [--steps 600] [--eval-every 50]

Runs the same two commands a user types (`seqgen preprocess shakespeare`, then `seqgen train -c
shakespeare` with a step budget instead of the demo's 6-minute one and more frequent, smaller
evaluations, so the curve has points), then copies the run's own ``curves.png`` -- the picture
every run writes beside its ``metrics.csv`` -- into docs/img/. The storage directory is kept, so
a second call resumes the run instead of training again.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

IMG = Path(__file__).resolve().parent / "img" / "curves-shakespeare.png"
RUN = "docs-curves"


def seqgen(*args: str) -> None:
    cmd = [sys.executable, "-m", "seqgen.cli", *args]
    print("+ seqgen", " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--storage", default=str(Path(tempfile.gettempdir()) / "seqgen-docs-curves"))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--eval-tokens", type=int, default=20000)
    a = p.parse_args()
    seqgen("preprocess", "shakespeare", "--storage", a.storage)
    seqgen("train", "-c", "shakespeare", "--storage", a.storage, f"run_name={RUN}",
           f"train.max_steps={a.steps}", "train.max_minutes=0", f"train.eval_every={a.eval_every}",
           f"train.eval_tokens={a.eval_tokens}", "train.progress=false")
    run = Path(a.storage) / "runs" / RUN
    IMG.parent.mkdir(exist_ok=True)
    shutil.copyfile(run / "curves.png", IMG)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    last = rows[-1]
    print(f"{IMG}: {len(rows)} evaluations; step {last['step']}: train {float(last['train_loss']):.3f}, "
          f"valid {float(last['valid_loss']):.3f} bits/char")


if __name__ == "__main__":
    main()
