"""``seqgen evaluate``: a checkpoint scored on a dataset split, statically and with dynamic
evaluation (sec. 3.1), as JSON.

Which dataset a checkpoint can be evaluated on is the catalog's question
(`seqgen.catalog.evaluation_dataset`); the scoring is the library's (`seqgen.evaluate` for text,
`seqgen.handwriting.evaluate` for pen strokes). This command picks the scorer for the dataset's
kind and runs it once per mode. A new way of scoring is one more function like `_text_rows`.
"""

from __future__ import annotations

import json
from typing import Optional

import typer

from seqgen.cli.options import CheckpointArg, StorageOpt, load_model, refuse
from seqgen.storage import Storage


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
    from seqgen.catalog import evaluation_dataset

    model, loaded = load_model(checkpoint, storage)
    st = Storage.from_url(storage)
    manifest = evaluation_dataset(st, loaded, dataset, split)
    modes = {"static": 0.0, **({"dynamic": dynamic_lr} if dynamic_lr > 0 else {})}
    if manifest.get("kind", "text") == "text":
        refuse("a text model", {"--max-lines": max_lines}, "use --max-tokens")
        rows = _text_rows(model, st, manifest, split, modes, seq_len or 100, max_tokens, batch_size)
    else:
        refuse("a handwriting model", {"--seq-len": seq_len, "--max-tokens": max_tokens},
               "it scores whole lines; use --max-lines")
        rows = _line_rows(model, loaded.meta, st, manifest, split, modes, max_lines, batch_size)
    typer.echo(json.dumps(rows, indent=2))


def _text_rows(model, st: Storage, manifest: dict, split: str, modes: dict[str, float], seq_len: int,
               max_tokens: int | None, streams: int) -> dict:
    """Bits per token / character, perplexity, error per mode (sec. 3)."""
    from seqgen.data.text import chars_per_token, open_split
    from seqgen.evaluate import evaluate_tokens
    from seqgen.progress import Progress

    ids = open_split(st, manifest, split)  # read window by window, never loaded whole
    ids = ids[:max_tokens] if max_tokens else ids
    rows = {}
    for mode, lr in modes.items():
        with Progress(f"evaluate {split} ({mode})", len(ids), "tokens") as p:
            stats = evaluate_tokens(model, ids, streams=streams, seq_len=seq_len, dynamic_lr=lr, progress=p)
        rows[mode] = stats.metrics(split, chars_per_token(manifest, split))
    return rows


def _line_rows(model, meta: dict, st: Storage, manifest: dict, split: str, modes: dict[str, float],
               max_lines: int | None, batch_size: int) -> dict:
    """Nats per line, nats per point, SSE per point per mode (secs. 4-5)."""
    from seqgen.handwriting.dataset import load_lines
    from seqgen.handwriting.evaluate import evaluate_lines, line_metrics
    from seqgen.progress import Progress

    lines = load_lines(st, manifest, split)
    lines = lines[:max_lines] if max_lines else lines
    rows = {}
    for mode, lr in modes.items():
        with Progress(f"evaluate {split} ({mode})", len(lines), "lines") as p:
            stats = evaluate_lines(model, lines, meta, batch_size=batch_size, dynamic_lr=lr, progress=p)
        rows[mode] = line_metrics(stats, split)
    return rows
