"""``seqgen train``, ``seqgen tune`` and ``seqgen demo``: training runs with Ray Train and searches
with Ray Tune."""

from __future__ import annotations

from typing import List, Optional

import typer

from seqgen.cli.options import AddressOpt, StorageOpt, config_path
from seqgen.storage import Storage


def train(
    overrides: List[str] = typer.Argument(None, help="Config overrides, e.g. model.hidden_size=512 train.max_steps=2000."),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="YAML config file or bundled name (shakespeare, ptb-char, ...)."),
    storage: Optional[str] = StorageOpt,
    address: Optional[str] = AddressOpt,
):
    """Train (or resume, if the run exists) a model with Ray Train; checkpoints go to storage."""
    from seqgen import config as cfgmod
    from seqgen.train.run import train as run

    cfg = cfgmod.load(config_path(config), overrides or [])
    result = run(cfg, Storage.from_url(storage), address)
    typer.echo(f"run: {result.run_url}\nbest checkpoint: {result.best_checkpoint}")


def tune(
    name: str = typer.Argument(..., help="Search name (results under <storage>/tune/<name>/)."),
    overrides: List[str] = typer.Argument(None, help="Base config overrides, e.g. train.max_steps=500."),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="Base YAML config or bundled name."),
    space: List[str] = typer.Option([], "--space", help="Search dimension, e.g. optim.lr=loguniform:1e-4:1e-2 (default: Graves' regularisers)."),
    num_samples: Optional[int] = typer.Option(None, help="Trials (default 8); with --staged, stage-2 trials per grid point (default 1)."),
    max_concurrent: int = typer.Option(1, help="Trials running at once."),
    staged: bool = typer.Option(False, "--staged", help="Graves sec. 3: train without regularisation to early "
                                "stopping, then retrain its best checkpoint with each regulariser "
                                "(--space, or none/dropout/weight noise/adaptive weight noise)."),
    scheduler: str = typer.Option("asha", help="Trial scheduler (stage 2 with --staged): asha | pbt."),
    grace_period: int = typer.Option(1, help="Evaluations before ASHA may stop a trial (PBT: between perturbations)."),
    storage: Optional[str] = StorageOpt,
    address: Optional[str] = AddressOpt,
):
    """Search regularisation settings with Ray Tune (ASHA early stopping, or PBT)."""
    from seqgen import config as cfgmod
    from seqgen.progress import Progress, tune_callback
    from seqgen.runtime import ensure_ray
    from seqgen.tune import parse_space, run_search, run_staged
    from seqgen.tune.space import grid_size

    base = cfgmod.load(config_path(config), overrides or [])
    parsed = parse_space(space) if space else None
    ensure_ray(address)
    search, default_samples = (run_staged, 1) if staged else (run_search, 8)
    samples = num_samples or default_samples
    trials = None if staged else samples * grid_size(parsed or {})  # staged: two searches, one count
    with Progress(f"tune {name}", trials, "trials") as p:
        result = search(base, Storage.from_url(storage), name, parsed, samples, max_concurrent, grace_period,
                        scheduler=scheduler, callbacks=[tune_callback(p)])
    typer.echo(f"results: {result.results_dir}\nbest checkpoint: {result.best_checkpoint}")


def demo(
    minutes: float = typer.Option(6.0, help="Training time budget in minutes."),
    run_name: str = typer.Option("shakespeare-demo", help="Run name (an existing run resumes)."),
    storage: Optional[str] = StorageOpt,
    address: Optional[str] = AddressOpt,
):
    """The main job on the embedded default: preprocess Tiny Shakespeare -> train -> print samples."""
    from seqgen import config as cfgmod
    from seqgen import text_sampling as sampling
    from seqgen.catalog import load_model
    from seqgen.data.presets import text_preset
    from seqgen.data.text import preprocess_text
    from seqgen.data.tokenizers import Vocabulary
    from seqgen.runtime import ensure_ray
    from seqgen.train.run import train as run

    st = Storage.from_url(storage)
    ensure_ray(address)
    manifest = preprocess_text(st, "shakespeare", text_preset("shakespeare"))
    typer.echo(f"[1/3] dataset: {manifest['splits']['train']['tokens']} training characters, "
               f"{manifest['vocab_size']} symbols -> {st.url_of(st.dataset_dir('shakespeare'))}")
    cfg = cfgmod.load(config_path("shakespeare"), [f"train.max_minutes={minutes}", f"run_name={run_name}"])
    typer.echo(f"[2/3] training {cfg.model.num_layers} x {cfg.model.hidden_size} {cfg.model.cell} for up to {minutes} min")
    result = run(cfg, st, address)
    model, loaded = load_model(result.best_checkpoint)
    vocab = Vocabulary.from_json(loaded.meta["vocab"])
    best = loaded.progress["evals"][-1]
    typer.echo(f"[3/3] checkpoint {result.best_checkpoint} (valid {best.get('valid_bpc', float('nan')):.3f} bits/char)\n")
    for text in sampling.generate(model, vocab, "ROMEO:\n", 400, temperature=0.8, seed=0, n=2):
        typer.echo("ROMEO:\n" + text + "\n" + "-" * 60)
