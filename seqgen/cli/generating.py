"""``seqgen sample``, ``seqgen score`` and ``seqgen write``: drawing from a model, and scoring a
text, on the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from seqgen.handwriting import DEFAULT_BIAS
from seqgen.cli.options import CheckpointArg, StorageOpt, load_model, refuse, require_kind
from seqgen.storage import Storage


def _vocab(loaded):
    from seqgen.data.tokenizers import Vocabulary

    return Vocabulary.from_json(loaded.meta["vocab"])


def sample(
    checkpoint: str = CheckpointArg,
    prompt: Optional[str] = typer.Option(None, help="Text: priming text fed before sampling."),
    length: Optional[int] = typer.Option(None, help="Symbols (text, default 500) or pen points (handwriting, default 700)."),
    temperature: Optional[float] = typer.Option(None, help="Text: softmax temperature (default 1); 0 = greedy."),
    top_k: Optional[int] = typer.Option(None, help="Text: sample only from the k most likely symbols (default 0 = all)."),
    top_p: Optional[float] = typer.Option(None, help="Text: nucleus sampling, only the likeliest symbols whose "
                                                     "probabilities sum to P (default 1 = all).", min=0.0, max=1.0),
    stop: Optional[list[str]] = typer.Option(None, help="Text: a sample ends before the first of these strings it "
                                                        "produces (repeat the option for several, at most 4)."),
    seed: Optional[int] = typer.Option(None, help="Random seed: the same seed gives the same sample."),
    n: Optional[int] = typer.Option(None, help="Number of samples (default 1); handwriting lines are stacked."),
    beam: int = typer.Option(0, help="Text: > 0: beam search of this width instead of sampling."),
    bias: Optional[float] = typer.Option(None, help=f"Handwriting: probability bias b (eqs. 61-62, default {DEFAULT_BIAS}); 0 = unbiased."),
    out: Optional[str] = typer.Option(None, help="Handwriting: output picture, .svg or .png (default strokes.svg)."),
    density: Optional[str] = typer.Option(None, help="Handwriting: also save the predicted mixture density along the "
                                                     "first line (Fig. 10) as PNG."),
    storage: Optional[str] = StorageOpt,
):
    """Generate text, or unconditional handwriting from a prediction network (Graves sec. 4)."""
    model, loaded = load_model(checkpoint, storage)
    kind = loaded.config.model.kind
    if kind == "text":
        refuse("a text model", {"--bias": bias, "--out": out, "--density": density},
               "those options are for handwriting checkpoints")
        _sample_text(model, _vocab(loaded), prompt, length, temperature, top_k, seed, n, beam, top_p, stop or [])
    elif kind == "handwriting_synthesis":
        raise ValueError(f"checkpoint {loaded.url} is a synthesis network, which writes a given text: "
                         f"use `seqgen write TEXT --checkpoint {checkpoint}`")
    else:
        refuse("handwriting sampling", {"--prompt": prompt, "--temperature": temperature, "--top-k": top_k,
                                        "--top-p": top_p, "--stop": stop or None, "--beam": beam or None}, "use --bias to trade variety for neatness")
        _sample_strokes(model, loaded, length or 700, DEFAULT_BIAS if bias is None else bias, seed, n or 1,
                        out or "strokes.svg", density)


def _sample_text(model, vocab, prompt, length, temperature, top_k, seed, n, beam, top_p, stop) -> None:
    from seqgen import text_sampling as sampling
    from seqgen.serve.schemas import MAX_STOP_STRINGS

    prompt, length = prompt or "", 500 if length is None else length
    if len(stop) > MAX_STOP_STRINGS or not all(stop):
        raise ValueError(f"--stop takes 1 to {MAX_STOP_STRINGS} non-empty strings, got {stop}")
    if top_p is not None and top_p <= 0:
        raise ValueError("--top-p must be above 0 (a tiny value is greedy)")
    if beam:
        refuse("--beam", {"--n": n, "--temperature": temperature, "--top-k": top_k, "--seed": seed,
                          "--top-p": top_p, "--stop": stop or None},
               "beam search returns the most likely continuations, deterministically "
               "(drop them, or sample without --beam)")
        for text, logp in sampling.beam_search(model, vocab, prompt, length, beam):
            typer.echo(f"[log p = {logp:.3f}] {prompt}{text}")
        return
    n = n or 1
    for text in sampling.generate(model, vocab, prompt, length, 1.0 if temperature is None else temperature,
                                  top_k or 0, seed, n, 1.0 if top_p is None else top_p, tuple(stop)):
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


def score(
    checkpoint: str = CheckpointArg,
    text: str = typer.Argument(..., help="The text or sentence to score."),
    storage: Optional[str] = StorageOpt,
):
    """Total log-probability, bits per token and perplexity of a text."""
    from seqgen.text_sampling import score_text

    model, loaded = load_model(checkpoint, storage)
    require_kind(loaded, "text", "score needs a text model (`seqgen evaluate` scores handwriting)")
    typer.echo(json.dumps(score_text(model, _vocab(loaded), text), indent=2))


def write(
    texts: List[str] = typer.Argument(..., help="Text to write; line breaks (and further arguments) start new lines, "
                                            "long lines are wrapped."),
    checkpoint: Optional[str] = typer.Option(None, help="Synthesis checkpoint (default: the bundled model)."),
    bias: float = typer.Option(DEFAULT_BIAS, help="Probability bias b (eqs. 61-62): 0 = unbiased, larger = neater."),
    style: Optional[str] = typer.Option(None, help="Prime with a style: 0-12 (shared sjvasquez styles) or a dataset line id."),
    prime_file: Optional[Path] = typer.Option(None, help='Prime with your own handwriting: a JSON file {"text": ..., '
                                              '"strokes": [[x, y, pen_up], ...]} (absolute points, y down).'),
    prime_xml: Optional[Path] = typer.Option(None, help="Prime with an IAM-OnDB lineStrokes XML file (with --prime-text)."),
    prime_text: Optional[str] = typer.Option(None, help="What the --prime-xml line says."),
    wrap: Optional[int] = typer.Option(None, help="Line width in characters (default: the longest line the model writes)."),
    unknown: str = typer.Option("error", help="Characters the model cannot write: error, drop or substitute "
                                "(nearest writable ones; every change is printed)."),
    seed: Optional[int] = typer.Option(None, help="Random seed: the same seed writes the same strokes."),
    out: str = typer.Option("line.svg", help="Output picture: .svg or .png (rasterised from the SVG by resvg)."),
    width: Optional[float] = typer.Option(None, help="Picture width in px (default: 1 data unit = 1 px for SVG, "
                                          "1200 px for PNG)."),
    stroke_width: Optional[float] = typer.Option(None, help="Pen width in px (default: 1/40 of a line's height)."),
    color: str = typer.Option("black", help="Ink colour (SVG colour: a name or #rrggbb)."),
    margin: Optional[float] = typer.Option(None, help="Margin in px (default: 1/10 of a line's height)."),
    smooth: bool = typer.Option(True, help="Curves through the pen's points (--no-smooth: straight segments)."),
    phi: Optional[str] = typer.Option(None, help="Also save the phi(t, u) alignment heatmap (PNG) of the first line."),
    best_of: int = typer.Option(1, help="Write each line K times (1-8, rows of one batch) and keep the candidate "
                                "the handwriting recognizer reads best."),
    recognizer: Optional[str] = typer.Option(None, help="With --best-of: the recognizer checkpoint (default: the bundled one)."),
    storage: Optional[str] = StorageOpt,
):
    """Handwriting synthesis: write text with the attention-window network (Graves sec. 5), a line or a page."""
    import numpy as np

    from seqgen.catalog import bundled_handwriting
    from seqgen.handwriting.models import meta_alphabet
    from seqgen.handwriting.render import phi_heatmap_png, strokes_svg, svg_png
    from seqgen.handwriting.sampling import POINTS_PER_CHAR, synthesize
    from seqgen.handwriting.wrap import page_lines

    model, loaded = load_model(checkpoint or bundled_handwriting(), storage)
    require_kind(loaded, "handwriting_synthesis", "write needs a handwriting_synthesis checkpoint "
                                                  "(`seqgen sample` draws from prediction networks)")
    prime = _prime(loaded, style, prime_file, prime_xml, prime_text, storage)
    alphabet = meta_alphabet(loaded.meta)
    max_chars = 1500 // POINTS_PER_CHAR  # synthesize's default max_points
    if wrap is not None and not 1 <= wrap <= max_chars:
        raise ValueError(f"--wrap must be between 1 and {max_chars} characters (the longest line this model writes)")
    chars = alphabet.chars[1:] if alphabet.fallback is None else None
    lines, changes = page_lines("\n".join(texts), chars, unknown, wrap or max_chars)
    for c in changes:
        typer.echo(f"character {c.at}: {c.char!r} -> {c.to!r}" if c.to else f"character {c.at}: {c.char!r} dropped")
    written = [line for line in lines if line]
    if not written:
        raise ValueError("nothing to write: the text has no writable characters")
    if best_of == 1:
        refuse("write", {"--recognizer": recognizer}, "it picks among candidates: add --best-of K")
        results = synthesize(model, loaded.meta, written, bias=bias, seed=seed, prime=prime)
    else:
        results = _best_of(model, loaded, written, bias, seed, prime, best_of, recognizer, storage)
    by_text = iter(results)
    rows = [next(by_text).offsets if line else np.zeros((0, 3), np.float32) for line in lines]
    png = not out.endswith(".svg")
    svg = strokes_svg(rows, width=width or (1200 if png else None), stroke_width=stroke_width, color=color,
                      margin=margin, smooth=smooth)
    Path(out).write_bytes(svg_png(svg) if png else svg.encode())
    if phi:
        Path(phi).write_bytes(phi_heatmap_png(results[0].phi, results[0].text))
    typer.echo(f"wrote {out} ({len(results)} line{'s' * (len(results) > 1)}: "
               f"{', '.join(f'{len(r.offsets)} points' for r in results)})")


def _prime(loaded, style, prime_file, prime_xml, prime_text, storage):
    """(offsets, text) to write in a hand: a style, your strokes (JSON) or an IAM-OnDB line (XML); or None."""
    from seqgen.handwriting.prime import check_prime_text, prime_from_points, read_prime_file, read_prime_xml
    from seqgen.handwriting.styles import resolve_style

    given = {"--style": style, "--prime-file": prime_file, "--prime-xml": prime_xml}
    if sum(v is not None for v in given.values()) > 1:
        raise ValueError("give one hand to write in: --style, --prime-file or --prime-xml")
    if (prime_xml is None) != (prime_text is None):
        raise ValueError("--prime-xml and --prime-text go together (the line's strokes and what it says)")
    if style is not None:
        return resolve_style(style, loaded.meta, Storage.from_url(storage))
    if prime_file is None and prime_xml is None:
        return None
    points, text = read_prime_file(prime_file) if prime_file is not None else (read_prime_xml(prime_xml), prime_text)
    check_prime_text(text, len(points))
    offsets, text, _ = prime_from_points(points, text, loaded.meta)
    return offsets, text


def _best_of(model, loaded, texts: list[str], bias: float, seed: Optional[int], prime, best_of: int,
             recognizer: Optional[str], storage: Optional[str]) -> list:
    """Each text's best of ``best_of`` candidates as the recognizer reads it (one line each on stdout)."""
    from seqgen import rng
    from seqgen.handwriting import legibility

    if not 1 <= best_of <= legibility.MAX_BEST_OF:
        raise ValueError(f"--best-of must be between 1 and {legibility.MAX_BEST_OF}, got {best_of}")
    reader, rec = load_model(recognizer or legibility.bundled_recognizer(), storage)
    require_kind(rec, "handwriting_recognition", "--recognizer needs a handwriting_recognition checkpoint")
    legibility.check_texts(texts, rec.meta, "the recognizer")
    seed = rng.random_seed() if seed is None else seed
    written = legibility.write_best(model, loaded.meta, reader, rec.meta, texts, bias, seed, best_of, prime=prime)
    for w in written:
        typer.echo(f"{w.result.text!r}: read as {w.reading!r} (CER {w.cer:.2f}, best of {best_of})")
    return [w.result for w in written]
