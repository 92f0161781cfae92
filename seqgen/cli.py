"""The ``seqgen`` command. Each command calls the same library functions as ``jobs/*.py``.

Storage: ``--storage URL`` or ``$SEQGEN_STORAGE`` (default ``./seqgen-storage``). Ray: a local Ray
on 127.0.0.1 is started on demand, or ``--address`` / ``$RAY_ADDRESS`` joins a cluster.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from seqgen.data.text import preprocess_text
from seqgen.storage import Storage

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

StorageOpt = typer.Option(None, "--storage", envvar="SEQGEN_STORAGE",
                          help="Storage root: a directory or an fsspec URL (s3://, gs://, memory://).")
AddressOpt = typer.Option(None, "--address", envvar="RAY_ADDRESS", help="Ray cluster address; default: a local Ray.")
CONFIGS = Path(__file__).parent / "configs"


def _config_path(config: Optional[str]) -> Optional[str]:
    """A YAML path, or the name of a bundled config (``seqgen/configs/<name>.yaml``)."""
    if config and not Path(config).exists() and (CONFIGS / f"{config}.yaml").exists():
        return str(CONFIGS / f"{config}.yaml")
    return config


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


@app.command()
def preprocess(
    name: str = typer.Argument(..., help="Dataset name on storage; a preset (shakespeare, ptb-word, ptb-char) needs no inputs."),
    input: List[str] = typer.Option([], "--input", "-i", help="Training text file(s): paths or fsspec URLs (s3://, gs://, memory://)."),
    valid: List[str] = typer.Option([], "--valid", help="Validation file(s) (else use --valid-fraction)."),
    test: List[str] = typer.Option([], "--test", help="Test file(s)."),
    preset: Optional[str] = typer.Option(None, help="Take the settings of this preset (default: NAME when it names one); "
                                                     "--input/--valid/--test replace its files."),
    data_dir: Optional[str] = typer.Option(None, help="Where preset corpora and the IAM-OnDB root are read: a directory or "
                                                       "fsspec URL (default: $SEQGEN_DATA_DIR, else ../shared/data)."),
    tokenizer: Optional[str] = typer.Option(None, help="char | byte | word | bigram (default: the preset's, else char). "
                                                       "word: whitespace tokens with <eos> at every line end; valid/test "
                                                       "words unseen in train and words beyond --max-vocab become <unk>."),
    tokens_are_chars: Optional[bool] = typer.Option(None, "--tokens-are-chars/--tokens-are-text",
                                                    help="Each token stands for one character (Mikolov's char-level PTB: "
                                                         "bits/token = bits/char), or for its text's length."),
    valid_fraction: Optional[float] = typer.Option(None, help="Tail fraction of the input used for validation (Hutter: 0.04)."),
    test_fraction: Optional[float] = typer.Option(None, help="Tail fraction of the input used for test."),
    max_vocab: Optional[int] = typer.Option(None, help="Vocabulary cap; words beyond it become <unk>, other kinds fail. 0 = none."),
    block_tokens: Optional[int] = typer.Option(None, help="Tokens per Parquet row (default 65536)."),
    chunk_mb: float = typer.Option(8.0, help="Bytes per parallel task, in MB (bounds memory per task)."),
    force: bool = typer.Option(False, help="Rebuild even if the sources and settings are unchanged."),
    handwriting: bool = typer.Option(False, help="Preprocess IAM-OnDB handwriting (--input = the IAM-OnDB root, a path or URL; "
                                                 "default <data-dir>/handwriting/iam-ondb)."),
    alphabet: str = typer.Option("full", help="Handwriting alphabet: full | graves57."),
    hw_valid_fraction: float = typer.Option(0.1, help="Handwriting: fraction of the forms used for validation."),
    forms_per_task: int = typer.Option(16, help="Handwriting: forms per parallel task."),
    storage: Optional[str] = StorageOpt,
    address: Optional[str] = AddressOpt,
):
    """Tokenise a corpus with parallel Ray tasks into Parquet shards + manifest on storage."""
    from seqgen.data.presets import text_spec
    from seqgen.runtime import ensure_ray

    st = Storage.from_url(storage)
    try:
        if handwriting:
            from seqgen.handwriting.dataset import preprocess_handwriting

            if len(input) > 1:
                raise ValueError("--handwriting takes one --input: the IAM-OnDB root")
            if st.shared_across_processes:
                ensure_ray(address)
            manifest = preprocess_handwriting(st, name, input[0] if input else None, alphabet=alphabet, force=force,
                                              valid_fraction=hw_valid_fraction, forms_per_task=forms_per_task,
                                              data_dir=data_dir)
        else:
            spec = text_spec(name, input, valid, test, preset=preset, data_dir=data_dir, tokenizer=tokenizer,
                             tokens_are_chars=tokens_are_chars, valid_fraction=valid_fraction,
                             test_fraction=test_fraction, max_vocab=max_vocab, block_tokens=block_tokens,
                             chunk_bytes=int(chunk_mb * (1 << 20)))
            if st.shared_across_processes:
                ensure_ray(address)
            manifest = preprocess_text(st, name, spec, force=force)
    except (ValueError, FileNotFoundError, KeyError) as e:
        _fail(str(e))
    counts = ", ".join(f"{s}: {v.get('tokens', v.get('lines'))}" for s, v in manifest["splits"].items())
    typer.echo(f"dataset {name} -> {st.url_of(st.dataset_dir(name))} ({counts}; fingerprint {manifest['fingerprint'][:12]})")


@app.command()
def train(
    overrides: List[str] = typer.Argument(None, help="Config overrides, e.g. model.hidden_size=512 train.max_steps=2000."),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="YAML config file or bundled name (shakespeare, ptb-char, ...)."),
    storage: Optional[str] = StorageOpt,
    address: Optional[str] = AddressOpt,
):
    """Train (or resume, if the run exists) a model with Ray Train; checkpoints go to storage."""
    from seqgen import config as cfgmod
    from seqgen.train.run import train as run

    try:
        cfg = cfgmod.load(_config_path(config), overrides or [])
    except (cfgmod.ConfigError, FileNotFoundError) as e:
        _fail(str(e))
    result = run(cfg, Storage.from_url(storage), address)
    typer.echo(f"run: {result.run_url}\nbest checkpoint: {result.best_checkpoint}")


def _load(checkpoint: str, storage: Optional[str]):
    from seqgen.data.tokenizers import Vocabulary
    from seqgen.models import load_model
    from seqgen.checkpoint import resolve

    try:
        model, loaded = load_model(resolve(Storage.from_url(storage), checkpoint))
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    vocab = Vocabulary.from_json(loaded.meta["vocab"]) if "vocab" in loaded.meta else None
    return model, loaded, vocab


CheckpointArg = typer.Argument(..., help="Checkpoint directory URL, run directory, or run name on storage.")


@app.command()
def evaluate(
    checkpoint: str = CheckpointArg,
    split: str = typer.Option("test", help="Split to evaluate: train | valid | test."),
    dataset: Optional[str] = typer.Option(None, help="Dataset name (default: the one the model was trained on)."),
    dynamic_lr: float = typer.Option(0.0, help="> 0: also run dynamic evaluation with this SGD learning rate."),
    seq_len: int = typer.Option(100, help="Evaluation window length."),
    max_tokens: int = typer.Option(0, help="Evaluate only the first N tokens (0 = all)."),
    storage: Optional[str] = StorageOpt,
):
    """Bits per token/character, perplexity and error on a split, static and dynamic side by side."""
    from seqgen.data.text import chars_per_token, load_manifest, load_split
    from seqgen.evaluate import evaluate_tokens

    model, loaded, _ = _load(checkpoint, storage)
    st = Storage.from_url(storage)
    manifest = load_manifest(st, dataset or loaded.config.dataset)
    if split not in manifest["splits"]:
        _fail(f"dataset {manifest['name']!r} has no {split!r} split")
    ids = load_split(st, manifest, split)
    ids = ids[:max_tokens] if max_tokens else ids
    cpt = chars_per_token(manifest, split)
    rows = {"static": evaluate_tokens(model, ids, seq_len=seq_len).metrics(split, cpt)}
    if dynamic_lr > 0:
        rows["dynamic"] = evaluate_tokens(model, ids, seq_len=seq_len, dynamic_lr=dynamic_lr).metrics(split, cpt)
    typer.echo(json.dumps(rows, indent=2))


@app.command()
def sample(
    checkpoint: str = CheckpointArg,
    prompt: str = typer.Option("", help="Priming text fed before sampling."),
    length: int = typer.Option(500, help="Symbols to generate."),
    temperature: float = typer.Option(1.0, help="Softmax temperature; 0 = greedy."),
    top_k: int = typer.Option(0, help="Sample only from the k most likely symbols (0 = all)."),
    seed: Optional[int] = typer.Option(None, help="Random seed: the same seed gives the same text."),
    n: int = typer.Option(1, help="Number of samples."),
    beam: int = typer.Option(0, help="> 0: beam search of this width instead of sampling."),
    storage: Optional[str] = StorageOpt,
):
    """Generate text from a checkpoint."""
    from seqgen import text_sampling as sampling

    model, _, vocab = _load(checkpoint, storage)
    try:
        if beam:
            for text, logp in sampling.beam_search(model, vocab, prompt, length, beam):
                typer.echo(f"[log p = {logp:.3f}] {prompt}{text}")
            return
        for text in sampling.generate(model, vocab, prompt, length, temperature, top_k, seed, n):
            typer.echo(prompt + text + ("\n" + "-" * 40 if n > 1 else ""))
    except ValueError as e:
        _fail(str(e))


@app.command()
def score(
    checkpoint: str = CheckpointArg,
    text: str = typer.Argument(..., help="The text or sentence to score."),
    storage: Optional[str] = StorageOpt,
):
    """Total log-probability, bits per token and perplexity of a text."""
    from seqgen.text_sampling import score_text

    model, _, vocab = _load(checkpoint, storage)
    try:
        typer.echo(json.dumps(score_text(model, vocab, text), indent=2))
    except ValueError as e:
        _fail(str(e))


@app.command()
def tune(
    name: str = typer.Argument(..., help="Search name (results under <storage>/tune/<name>/)."),
    overrides: List[str] = typer.Argument(None, help="Base config overrides, e.g. train.max_steps=500."),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="Base YAML config or bundled name."),
    space: List[str] = typer.Option([], "--space", help="Search dimension, e.g. optim.lr=loguniform:1e-4:1e-2 (default: Graves' regularisers)."),
    num_samples: int = typer.Option(8, help="Number of trials."),
    max_concurrent: int = typer.Option(1, help="Trials running at once."),
    storage: Optional[str] = StorageOpt,
    address: Optional[str] = AddressOpt,
):
    """Search regularisation settings with Ray Tune (ASHA early stopping)."""
    from seqgen import config as cfgmod
    from seqgen.runtime import ensure_ray
    from seqgen.tune import parse_space, run_search

    ensure_ray(address)
    try:
        base = cfgmod.load(_config_path(config), overrides or [])
        parsed = parse_space(space) if space else None
        result = run_search(base, Storage.from_url(storage), name, parsed, num_samples, max_concurrent)
    except (ValueError, FileExistsError) as e:  # ConfigError is a ValueError
        _fail(str(e))
    typer.echo(f"best checkpoint: {result.best_checkpoint}")


@app.command()
def serve(
    checkpoint: str = CheckpointArg,
    host: str = typer.Option("127.0.0.1", help="Interface to bind (0.0.0.0 exposes it to the network)."),
    port: int = typer.Option(8000, help="HTTP port."),
    replicas: int = typer.Option(1, help="Serve replicas."),
    max_batch_size: int = typer.Option(32, help="Requests batched into one forward pass per step."),
    storage: Optional[str] = StorageOpt,
    address: Optional[str] = AddressOpt,
):
    """Serve generate/score over HTTP JSON with Ray Serve (blocks until Ctrl-C)."""
    from seqgen.runtime import ensure_ray
    from seqgen.serve.app import run
    from seqgen.checkpoint import resolve

    ensure_ray(address)
    run(resolve(Storage.from_url(storage), checkpoint), host=host, port=port, num_replicas=replicas,
        max_batch_size=max_batch_size)


DEFAULT_HANDWRITING = Path(__file__).parent / "assets" / "handwriting"


@app.command()
def write(
    texts: List[str] = typer.Argument(..., help="Text(s) to write; several are stacked as lines."),
    checkpoint: Optional[str] = typer.Option(None, help="Synthesis checkpoint (default: the bundled model)."),
    bias: float = typer.Option(0.75, help="Probability bias b (eqs. 61-62): 0 = unbiased, larger = neater."),
    style: Optional[str] = typer.Option(None, help="Prime with a style: 0-12 (shared sjvasquez styles) or a dataset line id."),
    seed: Optional[int] = typer.Option(None, help="Random seed: the same seed writes the same strokes."),
    out: str = typer.Option("line.svg", help="Output picture: .svg or .png."),
    phi: Optional[str] = typer.Option(None, help="Also save the phi(t, u) alignment heatmap (PNG) of the first text."),
    storage: Optional[str] = StorageOpt,
):
    """Handwriting synthesis: write text with the attention-window network (Graves sec. 5)."""
    from seqgen.handwriting.render import phi_heatmap_png, strokes_png, strokes_svg
    from seqgen.handwriting.sampling import synthesize
    from seqgen.handwriting.styles import resolve_style
    from seqgen.models import load_model
    from seqgen.checkpoint import resolve

    st = Storage.from_url(storage)
    if checkpoint is None and not (DEFAULT_HANDWRITING / "manifest.json").exists():
        _fail("no bundled handwriting model in this install: pass --checkpoint")
    try:
        model, loaded = load_model(resolve(st, checkpoint) if checkpoint else str(DEFAULT_HANDWRITING))
        prime = resolve_style(style, loaded.meta, st) if style is not None else None
        results = synthesize(model, loaded.meta, list(texts), bias=bias, seed=seed, prime=prime)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    lines = [r.offsets for r in results]
    data = strokes_svg(lines).encode() if out.endswith(".svg") else strokes_png(lines)
    Path(out).write_bytes(data)
    if phi:
        Path(phi).write_bytes(phi_heatmap_png(results[0].phi, results[0].text))
    typer.echo(f"wrote {out} ({', '.join(f'{len(r.offsets)} points' for r in results)})")


@app.command()
def demo(
    minutes: float = typer.Option(6.0, help="Training time budget in minutes."),
    run_name: str = typer.Option("shakespeare-demo", help="Run name (an existing run resumes)."),
    storage: Optional[str] = StorageOpt,
    address: Optional[str] = AddressOpt,
):
    """The main job on the embedded default: preprocess Tiny Shakespeare -> train -> print samples."""
    from seqgen import config as cfgmod
    from seqgen import text_sampling as sampling
    from seqgen.data.presets import text_preset
    from seqgen.models import load_model
    from seqgen.data.tokenizers import Vocabulary
    from seqgen.runtime import ensure_ray
    from seqgen.train.run import train as run

    st = Storage.from_url(storage)
    ensure_ray(address)
    manifest = preprocess_text(st, "shakespeare", text_preset("shakespeare"))
    typer.echo(f"[1/3] dataset: {manifest['splits']['train']['tokens']} training characters, "
               f"{manifest['vocab_size']} symbols -> {st.url_of(st.dataset_dir('shakespeare'))}")
    cfg = cfgmod.load(_config_path("shakespeare"), [f"train.max_minutes={minutes}", f"run_name={run_name}"])
    typer.echo(f"[2/3] training {cfg.model.num_layers} x {cfg.model.hidden_size} {cfg.model.cell} for up to {minutes} min")
    result = run(cfg, st, address)
    model, loaded = load_model(result.best_checkpoint)
    vocab = Vocabulary.from_json(loaded.meta["vocab"])
    best = loaded.progress["evals"][-1]
    typer.echo(f"[3/3] checkpoint {result.best_checkpoint} (valid {best.get('valid_bpc', float('nan')):.3f} bits/char)\n")
    for text in sampling.generate(model, vocab, "ROMEO:\n", 400, temperature=0.8, seed=0, n=2):
        typer.echo("ROMEO:\n" + text + "\n" + "-" * 60)


if __name__ == "__main__":
    app()
