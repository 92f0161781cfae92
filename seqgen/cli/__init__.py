"""The ``seqgen`` command. Each command calls the same library functions as ``jobs/*.py``.

Storage: ``--storage URL`` or ``$SEQGEN_STORAGE`` (default ``./seqgen-storage``). Ray: a local Ray
on 127.0.0.1 is started on demand, or ``--address`` / ``$RAY_ADDRESS`` joins a cluster.

Errors a user can fix (a missing or damaged checkpoint or dataset, a bad option combination, a
failed training run) are one line on stderr and exit code 2: `user_error` is the one place that
turns exceptions into those lines. ``SEQGEN_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

import click
import typer
from typer.core import TyperGroup

from seqgen.data.text import preprocess_text
from seqgen.storage import Storage

# --------------------------------------------------------------------------------------------
# errors: one line, exit code 2


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e.args[0] if isinstance(e, KeyError) and e.args else e).split())
    return (text or type(e).__name__)[:600]


def _ray_cause(e: BaseException) -> BaseException | None:
    """The exception a Ray Train worker / controller / task raised, out of Ray's wrappers."""
    failures = getattr(e, "worker_failures", None)  # ray.train.WorkerGroupError
    if failures:
        return next(iter(failures.values()))
    for attr in ("controller_failure", "cause"):  # ray.train.ControllerError, ray.exceptions.RayTaskError
        inner = getattr(e, attr, None)
        if isinstance(inner, BaseException) and type(e).__module__.startswith("ray."):
            return inner
    return None


def user_error(e: BaseException) -> str | None:
    """The one-line message for an error the user can fix, or None for a bug (keep its traceback)."""
    inner = _ray_cause(e)
    if inner is not None:
        while _ray_cause(inner) is not None:
            inner = _ray_cause(inner)
        why = user_error(inner) or f"{type(inner).__name__}: {_one_line(inner)}"
        return f"failed in Ray: {why} (worker logs: /tmp/ray/session_latest/logs on the node)"
    if type(e).__name__ == "TrainingFailedError" or type(e).__module__.startswith("ray."):
        return f"Ray failed: {_one_line(e)} (logs: /tmp/ray/session_latest/logs)"
    if isinstance(e, (ValueError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
                      NotADirectoryError)):  # ConfigError, DatasetError, CheckpointError are ValueErrors
        return _one_line(e)
    if isinstance(e, ConnectionError):  # ray.init on a wrong --address, an unreachable object store
        return f"{_one_line(e)} (check --address / $RAY_ADDRESS and --storage)"
    return None


class _Commands(TyperGroup):
    """Runs a command and maps the user errors it raises to one line on stderr + exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as e:  # noqa: BLE001 - the CLI boundary: users get a line, bugs a traceback
            message = user_error(e)
            if message is None or os.environ.get("SEQGEN_DEBUG"):
                raise
            typer.secho(f"error: {message}", fg="red", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(cls=_Commands, add_completion=False, no_args_is_help=True, help=__doc__.split("\n\nErrors")[0],
                  pretty_exceptions_enable=False)

StorageOpt = typer.Option(None, "--storage", envvar="SEQGEN_STORAGE",
                          help="Storage root: a directory or an fsspec URL (s3://, gs://, memory://).")
AddressOpt = typer.Option(None, "--address", envvar="RAY_ADDRESS", help="Ray cluster address; default: a local Ray.")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")
CONFIGS = Path(__file__).parent / "configs"


def _config_path(config: Optional[str]) -> Optional[str]:
    """A YAML path, or the name of a bundled config (``seqgen/configs/<name>.yaml``)."""
    if config and not Path(config).exists() and (CONFIGS / f"{config}.yaml").exists():
        return str(CONFIGS / f"{config}.yaml")
    return config


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def versions() -> dict:
    """seqgen's version and those of the libraries a bug report needs (no import of torch or ray)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("seqgen", "torch", "ray"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out | {"python": platform.python_version()}


@app.callback(invoke_without_command=True)
def main(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the versions of seqgen, torch, ray and Python."),
    as_json: bool = typer.Option(False, "--json", help="With --version: as JSON."),
):
    if version:
        v = versions()
        typer.echo(json.dumps(v) if as_json else f"seqgen {v['seqgen']} (torch {v['torch']}, ray {v['ray']}, "
                                                   f"python {v['python']})")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


@app.command()
def preprocess(
    name: str = typer.Argument(..., help="Dataset name on storage; a preset (shakespeare, ptb-word, ptb-char, hutter) needs no inputs."),
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
    valid_fraction: Optional[float] = typer.Option(None, help="Tail fraction of the input used for validation (hutter preset: 0.05); "
                                                              "handwriting: fraction of the forms (default 0.1)."),
    test_fraction: Optional[float] = typer.Option(None, help="Tail fraction of the input used for test; handwriting: of the forms."),
    max_vocab: Optional[int] = typer.Option(None, help="Vocabulary cap; words beyond it become <unk>, other kinds fail. 0 = none."),
    block_tokens: Optional[int] = typer.Option(None, help="Tokens per Parquet row (default 65536)."),
    chunk_mb: float = typer.Option(8.0, help="Bytes per parallel task, in MB (bounds memory per task)."),
    force: bool = typer.Option(False, help="Rebuild even if the sources and settings are unchanged."),
    handwriting: bool = typer.Option(False, help="Preprocess IAM-OnDB handwriting (--input = the IAM-OnDB root, a path or URL; "
                                                 "default <data-dir>/handwriting/iam-ondb)."),
    alphabet: str = typer.Option("full", help="Handwriting alphabet: full | graves57."),
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
                                              valid_fraction=0.1 if valid_fraction is None else valid_fraction,
                                              test_fraction=test_fraction or 0.0, forms_per_task=forms_per_task,
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

    cfg = cfgmod.load(_config_path(config), overrides or [])
    result = run(cfg, Storage.from_url(storage), address)
    typer.echo(f"run: {result.run_url}\nbest checkpoint: {result.best_checkpoint}")


def _load(checkpoint: str, storage: Optional[str]):
    """(model, LoadedCheckpoint) for what the user typed, with the catalog's clear errors."""
    from seqgen.catalog import find_checkpoint, load_model

    return load_model(find_checkpoint(Storage.from_url(storage), checkpoint))


def _vocab(loaded):
    from seqgen.data.tokenizers import Vocabulary

    return Vocabulary.from_json(loaded.meta["vocab"])


def _refuse(what: str, given: dict, why: str) -> None:
    """Options the user gave that ``what`` cannot honour: an error, not silence."""
    names = [name for name, value in given.items() if value is not None and value is not False]
    if names:
        raise ValueError(f"{what} cannot honour {', '.join(names)}: {why}")


CheckpointArg = typer.Argument(..., help="Checkpoint directory URL, run directory, or run name on storage.")


@app.command()
def evaluate(
    checkpoint: str = CheckpointArg,
    split: str = typer.Option("test", help="Split to evaluate: train | valid | test."),
    dataset: Optional[str] = typer.Option(None, help="Dataset name (default: the one the model was trained on)."),
    dynamic_lr: float = typer.Option(0.0, help="> 0: also run dynamic evaluation with this SGD learning rate."),
    seq_len: Optional[int] = typer.Option(None, help="Text: evaluation window length (default 100)."),
    max_tokens: Optional[int] = typer.Option(None, help="Text: evaluate only the first N tokens (default: all)."),
    max_lines: Optional[int] = typer.Option(None, help="Handwriting: evaluate only the first N lines (default: all)."),
    batch_size: int = typer.Option(16, help="Parallel streams (text) or lines per batch (handwriting)."),
    storage: Optional[str] = StorageOpt,
):
    """Static and dynamic evaluation side by side, as JSON: bits per token/character, perplexity and
    error for text; nats per line, nats per point and SSE per point for handwriting."""
    from seqgen.data.text import load_manifest
    from seqgen.progress import Progress

    model, loaded = _load(checkpoint, storage)
    st = Storage.from_url(storage)
    kind = loaded.config.model.kind
    manifest = load_manifest(st, dataset or loaded.config.dataset)
    name, data_kind = manifest["name"], manifest.get("kind", "text")
    if (kind == "text") != (data_kind == "text"):
        raise ValueError(f"checkpoint {loaded.url} is a {kind} model but dataset {name!r} is a {data_kind} "
                         "dataset: pass --dataset with one of its kind")
    if split not in manifest["splits"]:
        raise ValueError(f"dataset {name!r} has no {split!r} split (it has {', '.join(sorted(manifest['splits']))}): "
                         "pass --split")
    modes = {"static": 0.0, **({"dynamic": dynamic_lr} if dynamic_lr > 0 else {})}
    rows = {}
    if kind == "text":
        from seqgen.data.text import chars_per_token, open_split
        from seqgen.evaluate import evaluate_tokens

        _refuse("a text model", {"--max-lines": max_lines}, "use --max-tokens")

        if manifest["vocab"] != loaded.meta["vocab"]:
            raise ValueError(f"dataset {name!r} has another vocabulary than checkpoint {loaded.url}: its ids "
                             "would mean other symbols; evaluate on the dataset the model was trained on")
        ids = open_split(st, manifest, split)  # read window by window, never loaded whole
        ids = ids[:max_tokens] if max_tokens else ids
        for mode, lr in modes.items():
            with Progress(f"evaluate {split} ({mode})", len(ids), "tokens") as p:
                stats = evaluate_tokens(model, ids, streams=batch_size, seq_len=seq_len or 100, dynamic_lr=lr,
                                        progress=p)
            rows[mode] = stats.metrics(split, chars_per_token(manifest, split))
    else:
        from seqgen.handwriting.evaluate import evaluate_lines, line_metrics
        from seqgen.handwriting.dataset import load_lines
        from seqgen.handwriting.iam import Alphabet
        from seqgen.handwriting.models import meta_alphabet

        _refuse("a handwriting model", {"--seq-len": seq_len, "--max-tokens": max_tokens},
                "it scores whole lines; use --max-lines")
        if model.synthesis and meta_alphabet(loaded.meta) != Alphabet.from_json(manifest["alphabet"]):
            raise ValueError(f"dataset {name!r} has another alphabet than checkpoint {loaded.url}: "
                             "evaluate on the dataset the model was trained on")
        lines = load_lines(st, manifest, split)
        lines = lines[:max_lines] if max_lines else lines
        for mode, lr in modes.items():
            with Progress(f"evaluate {split} ({mode})", len(lines), "lines") as p:
                stats = evaluate_lines(model, lines, loaded.meta, batch_size=batch_size, dynamic_lr=lr, progress=p)
            rows[mode] = line_metrics(stats, split)
    typer.echo(json.dumps(rows, indent=2))


@app.command()
def sample(
    checkpoint: str = CheckpointArg,
    prompt: Optional[str] = typer.Option(None, help="Text: priming text fed before sampling."),
    length: Optional[int] = typer.Option(None, help="Symbols (text, default 500) or pen points (handwriting, default 700)."),
    temperature: Optional[float] = typer.Option(None, help="Text: softmax temperature (default 1); 0 = greedy."),
    top_k: Optional[int] = typer.Option(None, help="Text: sample only from the k most likely symbols (default 0 = all)."),
    seed: Optional[int] = typer.Option(None, help="Random seed: the same seed gives the same sample."),
    n: Optional[int] = typer.Option(None, help="Number of samples (default 1); handwriting lines are stacked."),
    beam: int = typer.Option(0, help="Text: > 0: beam search of this width instead of sampling."),
    bias: Optional[float] = typer.Option(None, help="Handwriting: probability bias b (eqs. 61-62, default 0.75); 0 = unbiased."),
    out: Optional[str] = typer.Option(None, help="Handwriting: output picture, .svg or .png (default strokes.svg)."),
    density: Optional[str] = typer.Option(None, help="Handwriting: also save the predicted mixture density along the "
                                                     "first line (Fig. 10) as PNG."),
    storage: Optional[str] = StorageOpt,
):
    """Generate text, or unconditional handwriting from a prediction network (Graves sec. 4)."""
    model, loaded = _load(checkpoint, storage)
    kind = loaded.config.model.kind
    if kind == "text":
        _refuse("a text model", {"--bias": bias, "--out": out, "--density": density},
                "those options are for handwriting checkpoints")
        _sample_text(model, _vocab(loaded), prompt, length, temperature, top_k, seed, n, beam)
    elif kind == "handwriting_synthesis":
        raise ValueError(f"checkpoint {loaded.url} is a synthesis network, which writes a given text: "
                         f"use `seqgen write TEXT --checkpoint {checkpoint}`")
    else:
        _refuse("handwriting sampling", {"--prompt": prompt, "--temperature": temperature, "--top-k": top_k,
                                         "--beam": beam or None}, "use --bias to trade variety for neatness")
        _sample_strokes(model, loaded, length or 700, 0.75 if bias is None else bias, seed, n or 1,
                        out or "strokes.svg", density)


def _sample_text(model, vocab, prompt, length, temperature, top_k, seed, n, beam) -> None:
    from seqgen import text_sampling as sampling

    prompt, length = prompt or "", 500 if length is None else length
    if beam:
        _refuse("--beam", {"--n": n, "--temperature": temperature, "--top-k": top_k, "--seed": seed},
                "beam search returns the most likely continuations, deterministically "
                "(drop them, or sample without --beam)")
        for text, logp in sampling.beam_search(model, vocab, prompt, length, beam):
            typer.echo(f"[log p = {logp:.3f}] {prompt}{text}")
        return
    n = n or 1
    for text in sampling.generate(model, vocab, prompt, length, 1.0 if temperature is None else temperature,
                                  top_k or 0, seed, n):
        typer.echo(prompt + text + ("\n" + "-" * 40 if n > 1 else ""))


def _sample_strokes(model, loaded, points: int, bias: float, seed, n: int, out: str, density) -> None:
    from seqgen.handwriting.render import mixture_density_png, strokes_png, strokes_svg
    from seqgen.handwriting.sampling import read_line, sample_strokes

    lines = [sample_strokes(model, loaded.meta, points, bias=bias, seed=None if seed is None else seed + i)
             for i in range(n)]
    Path(out).write_bytes(strokes_svg(lines).encode() if out.endswith(".svg") else strokes_png(lines))
    typer.echo(f"wrote {out} ({', '.join(f'{len(o)} points' for o in lines)})")
    if density:
        yhat, _ = read_line(model, loaded.meta, lines[0])
        Path(density).write_bytes(mixture_density_png(lines[0], yhat.numpy(), model.M, offset_mean=loaded.meta["offset_mean"],
                                                      offset_std=loaded.meta["offset_std"]))
        typer.echo(f"wrote {density} (mixture density along the first line)")


@app.command()
def score(
    checkpoint: str = CheckpointArg,
    text: str = typer.Argument(..., help="The text or sentence to score."),
    storage: Optional[str] = StorageOpt,
):
    """Total log-probability, bits per token and perplexity of a text."""
    from seqgen.text_sampling import score_text

    model, loaded = _load(checkpoint, storage)
    if loaded.config.model.kind != "text":
        raise ValueError(f"checkpoint {loaded.url} is a {loaded.config.model.kind} model: score needs a text model "
                         "(`seqgen evaluate` scores handwriting)")
    typer.echo(json.dumps(score_text(model, _vocab(loaded), text), indent=2))


@app.command()
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

    base = cfgmod.load(_config_path(config), overrides or [])
    parsed = parse_space(space) if space else None
    ensure_ray(address)
    search, default_samples = (run_staged, 1) if staged else (run_search, 8)
    samples = num_samples or default_samples
    trials = None if staged else samples * grid_size(parsed or {})  # staged: two searches, one count
    with Progress(f"tune {name}", trials, "trials") as p:
        result = search(base, Storage.from_url(storage), name, parsed, samples, max_concurrent, grace_period,
                        scheduler=scheduler, callbacks=[tune_callback(p)])
    typer.echo(f"results: {result.results_dir}\nbest checkpoint: {result.best_checkpoint}")


@app.command()
def serve(
    checkpoint: Optional[str] = typer.Argument(None, help="Checkpoint directory URL, run directory, or run name "
                                                          "on storage (default: the bundled handwriting model)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (0.0.0.0 exposes it to the network)."),
    port: int = typer.Option(8000, help="HTTP port."),
    replicas: int = typer.Option(1, help="Serve replicas (ignored with --autoscale)."),
    autoscale: Optional[str] = typer.Option(None, help="MIN:MAX replicas, scaled by Serve on ongoing requests."),
    max_streams: int = typer.Option(64, help="Rows one replica generates at once (its running batch)."),
    max_queued: int = typer.Option(64, help="Requests one replica lets wait; beyond them: 503 at once."),
    timeout: float = typer.Option(60.0, help="Default deadline of a request in seconds (504 past it)."),
    cpus: float = typer.Option(1.0, help="CPUs per replica."),
    gpus: float = typer.Option(0.0, help="GPUs per replica (the model goes on the GPU when it has one)."),
    ingress: str = typer.Option("proxy", help="What answers on HOST:PORT: 'proxy' (Serve's Python proxy) or "
                                              "'haproxy' (HAProxy in front of replicas that serve HTTP "
                                              "themselves: Serve's throughput-optimized mode, docs/serving.md). "
                                              "With --address, the cluster's nodes must have been started with it."),
    storage: Optional[str] = StorageOpt,
    address: Optional[str] = AddressOpt,
):
    """Serve /generate, /score (text) or /write (handwriting), and a page at /, with Ray Serve
    (blocks until Ctrl-C)."""
    from seqgen.checkpoint import resolve
    from seqgen.runtime import ensure_ray
    from seqgen.serve import ingress as ingresses

    if ingress == "direct" or ingress not in ingresses.INGRESS:
        raise typer.BadParameter(f"{ingress!r}: use proxy or haproxy", param_hint="--ingress")
    if not (address or os.environ.get("RAY_ADDRESS")):
        ingresses.select(ingress)  # before the local Ray starts: every Ray process reads it at import
    from seqgen.serve.app import parse_autoscale, run

    st = Storage.from_url(storage)
    url = resolve(st, checkpoint) if checkpoint else str(DEFAULT_HANDWRITING)
    scaling = parse_autoscale(autoscale)
    ensure_ray(address)
    run(url, host=host, port=port, num_replicas=replicas, autoscale=scaling, max_streams=max_streams,
        max_queued=max_queued, timeout_s=timeout, num_cpus=cpus, num_gpus=gpus, storage=st.url)


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
    from seqgen.catalog import load_model
    from seqgen.handwriting.render import phi_heatmap_png, strokes_png, strokes_svg
    from seqgen.handwriting.sampling import synthesize
    from seqgen.handwriting.styles import resolve_style

    st = Storage.from_url(storage)
    if checkpoint is None and not (DEFAULT_HANDWRITING / "manifest.json").exists():
        raise ValueError("no bundled handwriting model in this install: pass --checkpoint")
    if checkpoint:
        model, loaded = _load(checkpoint, storage)
    else:
        model, loaded = load_model(str(DEFAULT_HANDWRITING))
    if loaded.config.model.kind != "handwriting_synthesis":
        raise ValueError(f"checkpoint {loaded.url} is a {loaded.config.model.kind} model: write needs a "
                         "handwriting_synthesis checkpoint (`seqgen sample` draws from prediction networks)")
    prime = resolve_style(style, loaded.meta, st) if style is not None else None
    results = synthesize(model, loaded.meta, list(texts), bias=bias, seed=seed, prime=prime)
    lines = [r.offsets for r in results]
    data = strokes_svg(lines).encode() if out.endswith(".svg") else strokes_png(lines)
    Path(out).write_bytes(data)
    if phi:
        Path(phi).write_bytes(phi_heatmap_png(results[0].phi, results[0].text))
    typer.echo(f"wrote {out} ({', '.join(f'{len(r.offsets)} points' for r in results)})")


# --------------------------------------------------------------------------------------------
# what is on storage, what is in a checkpoint, export


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A rich table on stdout; ``columns`` of empty names: a two-column key / value list."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=any(columns))
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*r)
    console = Console()
    if not console.is_terminal:  # logs and pipes: wider than the 80-column default
        console = Console(width=160)
    console.print(table)


def _num(value, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)


@app.command()
def runs(storage: Optional[str] = StorageOpt, as_json: bool = JsonOpt):
    """List the training runs on storage: kind, steps, best metric, checkpoints, last update."""
    from dataclasses import asdict

    from seqgen.catalog import list_runs

    st = Storage.from_url(storage)
    found = list_runs(st)
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in found], indent=2))
        return
    rows = [[r.name, r.kind or "?", f"{r.steps}/{r.max_steps}" if r.max_steps else str(r.steps),
             f"{r.best_metric} {_num(r.best)}" + (f" @ {r.best_step}" if r.best_step else "") if r.best_metric else "",
             str(r.checkpoints), r.updated] for r in found]
    _table(f"runs on {st.url}", ["name", "kind", "steps", "best", "checkpoints", "updated"], rows)


@app.command()
def datasets(storage: Optional[str] = StorageOpt, as_json: bool = JsonOpt):
    """List the preprocessed datasets on storage: kind, size per split, symbols, last update."""
    from dataclasses import asdict

    from seqgen.catalog import list_datasets

    st = Storage.from_url(storage)
    found = list_datasets(st)
    if as_json:
        typer.echo(json.dumps([asdict(d) for d in found], indent=2))
        return
    rows = [[d.name, d.kind, ", ".join(f"{s} {n:,}" for s, n in d.splits.items()) + f" {d.unit}",
             str(d.symbols), d.updated] for d in found]
    _table(f"datasets on {st.url}", ["name", "kind", "size", "symbols", "updated"], rows)


@app.command()
def inspect(checkpoint: str = CheckpointArg, storage: Optional[str] = StorageOpt, as_json: bool = JsonOpt):
    """What a checkpoint holds: kind, step, metrics, parameters, dataset, vocabulary or alphabet,
    file sizes and the config it was trained with."""
    from seqgen.catalog import find_checkpoint, inspect_checkpoint

    info = inspect_checkpoint(find_checkpoint(Storage.from_url(storage), checkpoint))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    best = info["best"]
    rows = [["checkpoint", info["checkpoint"]], ["kind", info["kind"]], ["run", info["run_name"]],
            ["dataset", info["dataset"]], ["step", str(info["step"])], ["parameters", f"{info['parameters']:,}"],
            ["best", f"{best['metric']} {_num(best['value'])} at step {best['step']}" if best["metric"] else ""],
            ["last evaluation", "  ".join(f"{k}={_num(v)}" for k, v in info["metrics"].items())],
            ["resumable", "yes" if info["resumable"] else "no (inference only)"]]
    if "vocabulary" in info:
        v = info["vocabulary"]
        k = 80 if v["kind"] == "char" else 30
        shown = "".join(v["symbols"][:k]) if v["kind"] == "char" else " ".join(map(str, v["symbols"][:k]))
        rows.append(["vocabulary", f"{v['size']} {v['kind']} symbols: {shown!r}" + (" ..." if v["size"] > k else "")])
    if "alphabet" in info:
        a = info["alphabet"]
        rows.append(["alphabet", f"{a['size']} classes (END + {a['chars']!r})"])
    rows.append(["files", ", ".join(f"{k} {v:,} B" for k, v in info["files"].items()) + f" (total {info['total_bytes']:,} B)"])
    rows += [[f"config {section}", "  ".join(f"{k}={v}" for k, v in values.items())] if isinstance(values, dict)
             else [f"config {section}", str(values)] for section, values in info["config"].items()]
    _table(f"checkpoint {checkpoint}", ["", ""], rows)


@app.command()
def export(
    checkpoint: str = CheckpointArg,
    format: str = typer.Option("torchscript", "--format", help="torchscript | onnx."),
    out: str = typer.Option(..., "--out", help="Output file (e.g. model.pt or model.onnx)."),
    storage: Optional[str] = StorageOpt,
    as_json: bool = JsonOpt,
):
    """Export the model's one-step function (state in, state out) to TorchScript or ONNX, to run
    the sampler elsewhere (docs/export.md)."""
    from seqgen.export import export as run_export

    model, loaded = _load(checkpoint, storage)
    info = run_export(model, loaded.meta, loaded.config.model.kind, out, format)
    summary = {"out": out, "format": format, "kind": loaded.config.model.kind, "inputs": info["inputs"],
               "outputs": info["outputs"], "state_shapes": info["state_shapes"]}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(f"wrote {out} ({format}; inputs: {', '.join(info['inputs'])}; outputs: {', '.join(info['outputs'])})")


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
