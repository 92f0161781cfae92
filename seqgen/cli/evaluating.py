"""``seqgen evaluate``: a checkpoint scored on a dataset split, statically and with dynamic
evaluation (sec. 3.1), as JSON.

Which dataset a checkpoint can be evaluated on is the catalog's question
(`seqgen.catalog.evaluation_dataset`); the scoring is the library's (`seqgen.evaluate` for text,
`seqgen.handwriting.evaluate` for pen strokes). This command picks the scorer for the dataset's
kind and runs it once per mode. A new way of scoring is one more function like `_text_rows`:
a recognizer's readings (`_reading_rows`), a synthesis network's legibility (`_legibility`).
"""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from seqgen.cli.options import CheckpointArg, JsonOpt, StorageOpt, load_model, refuse, require_kind
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
    legibility: bool = typer.Option(False, "--legibility", help="Synthesis network: write texts and read them back "
                                    "with a recognizer; CER / WER / stalls per bias (docs/handwriting.md)."),
    recognizer: Optional[str] = typer.Option(None, help="--legibility: the recognizer checkpoint (default: the bundled one)."),
    texts: Optional[str] = typer.Option(None, help="--legibility: a file of texts, one a line (default: a bundled list "
                                        "of sentences that appear in no IAM-OnDB transcription)."),
    bias: List[str] = typer.Option([], help="--legibility: probability biases (eqs. 61-62), repeated or comma-separated "
                                   "(default 0,0.5,0.75,1,2)."),
    samples: int = typer.Option(1, help="--legibility: writings of every text at each bias."),
    best_of: int = typer.Option(1, help="--legibility: each writing is the best of K candidates (1-8) as the recognizer reads them."),
    seed: int = typer.Option(0, help="--legibility: random seed (the same seed gives the same numbers); "
                             "--style-transfer: the seed of the other writer's choice."),
    style_transfer: bool = typer.Option(False, "--style-transfer", help="Synthesis network: does a prime carry its "
                                        "writer's hand? Per form of the split, line B's nats/point alone, after the "
                                        "same writer's line A, and after another writer's line."),
    drawn: bool = typer.Option(False, "--drawn", help="--style-transfer: the primes as a drawing of them reaches "
                               "the network (scaled to the training data's size, as /write's prime)."),
    as_json: bool = JsonOpt,
    storage: Optional[str] = StorageOpt,
):
    """Static and dynamic evaluation side by side, as JSON: bits per token/character, perplexity and
    error for text; nats per line, nats per point and SSE per point for handwriting; CER and WER for
    a handwriting recognizer. With --legibility: how legibly a synthesis network writes."""
    from seqgen.catalog import evaluation_dataset

    model, loaded = load_model(checkpoint, storage)
    st = Storage.from_url(storage)
    if legibility:
        refuse("--legibility", {"--dataset": dataset, "--dynamic-lr": dynamic_lr or None, "--max-lines": max_lines,
                                "--drawn": drawn or None},
               "it writes its own texts (--texts)")
        _legibility(model, loaded, st, recognizer, texts, bias, samples, best_of, seed, as_json)
        return
    refuse("evaluate without --legibility", {"--recognizer": recognizer, "--texts": texts, "--bias": bias or None},
           "they are options of --legibility")
    manifest = evaluation_dataset(st, loaded, dataset, split)
    if style_transfer:
        refuse("--style-transfer", {"--dynamic-lr": dynamic_lr or None}, "it scores statically")
        _style_transfer(model, loaded, st, manifest, split, max_lines, seed, as_json, drawn)
        return
    refuse("evaluate without --style-transfer", {"--drawn": drawn or None}, "it is an option of --style-transfer")
    modes = {"static": 0.0, **({"dynamic": dynamic_lr} if dynamic_lr > 0 else {})}
    if loaded.config.model.kind == "handwriting_recognition":
        refuse("a recognizer", {"--dynamic-lr": dynamic_lr or None}, "it is not a generative model")
        rows = _reading_rows(model, loaded.meta, st, manifest, split, max_lines)
    elif manifest.get("kind", "text") == "text":
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


def _reading_rows(model, meta: dict, st: Storage, manifest: dict, split: str, max_lines: int | None) -> dict:
    """A recognizer's CER and WER on real lines, read with its own normalisation (its checkpoint's
    statistics), whatever dataset the lines were preprocessed into."""
    from seqgen.handwriting.dataset import load_lines
    from seqgen.handwriting.legibility import check_texts
    from seqgen.handwriting.recognizer import line_steps, read_steps, reading_stats
    from seqgen.progress import Progress

    lines = load_lines(st, manifest, split)
    lines = lines[:max_lines] if max_lines else lines
    texts = [line["text"] for line in lines]
    check_texts(texts, meta, "the recognizer", f"dataset {manifest['name']!r} {split} ")
    with Progress(f"read {split}", len(lines), "lines") as p:
        readings = read_steps(model, meta, line_steps(lines))
        p.advance(len(lines))
    stats = reading_stats(readings, texts)
    return {"static": {f"{split}_cer": stats.cer, f"{split}_wer": stats.wer, f"{split}_lines": stats.lines}}


def _biases(values: list[str]) -> list[float]:
    try:
        out = [float(v) for item in values for v in item.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--bias takes numbers (repeated or comma-separated), got {' '.join(values)!r}") from None
    if any(b < 0 for b in out):
        raise ValueError(f"--bias must be >= 0, got {out}")
    return out or [0.0, 0.5, 0.75, 1.0, 2.0]


def _legibility(synth, loaded, st: Storage, recognizer: str | None, texts_file: str | None, bias: list[str],
                samples: int, best_of: int, seed: int, as_json: bool) -> None:
    from seqgen.catalog import load_model as load_checkpoint
    from seqgen.handwriting import legibility as leg
    from seqgen.progress import Progress

    require_kind(loaded, "handwriting_synthesis", "--legibility needs a handwriting_synthesis checkpoint")
    if samples < 1:
        raise ValueError(f"--samples must be >= 1, got {samples}")
    if not 1 <= best_of <= leg.MAX_BEST_OF:
        raise ValueError(f"--best-of must be between 1 and {leg.MAX_BEST_OF}, got {best_of}")
    biases = _biases(bias)
    texts = leg.read_texts(texts_file or leg.DEFAULT_TEXTS)
    reader, rec = load_model(recognizer, str(st.url)) if recognizer else load_checkpoint(leg.bundled_recognizer())
    require_kind(rec, "handwriting_recognition", "--recognizer needs a handwriting_recognition checkpoint "
                 "(`seqgen train -c iam-recognizer`)")
    leg.check_texts(texts, loaded.meta, "the synthesis network", f"{texts_file or 'the bundled texts'}: ")
    leg.check_texts(texts, rec.meta, "the recognizer", f"{texts_file or 'the bundled texts'}: ")
    with Progress("legibility", len(biases) * samples * len(texts), "lines") as p:
        per_bias = leg.measure(synth, loaded.meta, reader, rec.meta, texts, biases, samples, best_of, seed, p)
    report = {"synthesis": loaded.url, "recognizer": rec.url, "real_cer": leg.real_cer(rec),
              "best_of": best_of, "texts": len(texts), "bias": per_bias}
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from seqgen.cli.tables import table

    rows = [[b, f"{r['cer']:.3f}", f"{r['wer']:.3f}", f"{r['stalls']}/{r['samples']}"] for b, r in per_bias.items()]
    real = report["real_cer"]
    rows.append(["real lines", "" if real is None else f"{real:.3f}", "", ""])
    table(f"legibility of {loaded.url} (best of {best_of}, read by {rec.url})", ["bias", "CER", "WER", "stalls"], rows)


def _style_transfer(model, loaded, st: Storage, manifest: dict, split: str, max_lines: int | None, seed: int,
                    as_json: bool, drawn: bool = False) -> None:
    from seqgen.cli.tables import table
    from seqgen.handwriting.dataset import load_lines
    from seqgen.handwriting.evaluate import style_transfer

    require_kind(loaded, "handwriting_synthesis", "--style-transfer needs a handwriting_synthesis checkpoint "
                 "(only it writes a text after a prime)")
    lines = load_lines(st, manifest, split)
    report = {"synthesis": loaded.url, "dataset": manifest["name"], "split": split,
              "primes": "as drawn" if drawn else "as stored",
              **style_transfer(model, loaded.meta, lines[:max_lines] if max_lines else lines, seed, drawn)}
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    n, nats = report["forms"], report["nats_per_point"]
    table(f"line B of {n} writers of {manifest['name']} {split}, nats per point (lower is likelier)",
          ["", "mean", "own prime better in"],
          [["unprimed", f"{nats['unprimed']:.3f}", f"{report['own_beats_unprimed']}/{n}"],
           ["primed with the same writer's line A", f"{nats['own_prime']:.3f}", ""],
           ["primed with another writer's line", f"{nats['other_prime']:.3f}", f"{report['own_beats_other']}/{n}"]])
    tenths = report["by_tenth_of_b"]
    table("where along line B: mean nats per point in each tenth of B", ["", *map(str, range(1, 11))],
          [[name, *(f"{x:.2f}" for x in tenths[key])] for name, key in
           (("unprimed", "unprimed"), ("own prime", "own_prime"), ("other's prime", "other_prime"))])
