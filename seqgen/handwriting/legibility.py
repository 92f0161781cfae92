"""Legibility of a synthesis network as a number: write texts, read them back with the recognizer
(`seqgen.handwriting.recognizer`), and count the edits between what was asked and what was read.

    texts --synthesis network, bias b, K candidates per line as rows of one batch--> pen offsets
          --recognizer (its own normalisation)--> readings --edit distance--> CER, WER; stalls

Best-of-K (`write_best`) keeps, for every line, the candidate the recognizer reads best (lowest
CER against the intended text; ties go to the candidate the synthesis network itself finds
likelier, its mean log-likelihood per point). A line *stalls* when the window stops before its
last two characters (the final phi(t, u) peaks earlier): it ran to the hard length limit instead
of ending by the stop rule of sec. 5.

Seeds: candidate k of line i in a call with seed s uses seed s + i * K + k, so a call's result
depends only on its seed, texts and K (`synthesize` draws each row from its own seed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rapidfuzz.distance import Levenshtein

from seqgen.handwriting.evaluate import line_log_likelihoods
from seqgen.handwriting.models import meta_alphabet
from seqgen.handwriting.recognizer import ReadingStats, read_steps, reading_stats
from seqgen.handwriting.sampling import Result, synthesize

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEFAULT_TEXTS = ASSETS / "legibility-texts.txt"
BUNDLED_RECOGNIZER = ASSETS / "recognizer"
MAX_BEST_OF = 8


def bundled_recognizer() -> str:
    """The recognizer shipped in the package (the default meter); ValueError if this install has none."""
    if not (BUNDLED_RECOGNIZER / "manifest.json").exists():
        raise ValueError("this install has no bundled handwriting recognizer: name one (--recognizer)")
    return str(BUNDLED_RECOGNIZER)


def real_cer(loaded) -> float | None:
    """The recognizer's CER on real held-out lines, as its training measured it at this checkpoint's
    step (the yardstick: "as legible as people write"); None if it was never evaluated."""
    evals = [e for e in loaded.progress.get("evals", []) if "valid_cer" in e]
    if not evals:
        return None
    at_step = [e for e in evals if e.get("step") == loaded.progress.get("step")]
    return float((at_step or evals)[-1]["valid_cer"])


@dataclass
class Written:
    """One written line, as chosen among its candidates."""

    result: Result
    reading: str  # what the recognizer read
    cer: float  # edit distance / len(text)
    log_likelihood: float  # mean nats per point under the synthesis network (tie-break)
    stalled: bool
    candidates: int


def stalled(result: Result) -> bool:
    """The window stopped before the text's last two characters (see the module docstring)."""
    return int(result.phi[-1].argmax()) < len(result.text) - 2


def read_texts(path: str | Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file; ValueError for a file with none."""
    texts = [t.strip() for t in Path(path).read_text(encoding="utf-8").splitlines()]
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError(f"{path}: no text lines to write (the file is empty)")
    return texts


def check_texts(texts: list[str], meta: dict, who: str, where: str = "") -> None:
    """ValueError naming the first line (1-based) with a character outside ``meta``'s alphabet."""
    alphabet = meta_alphabet(meta)
    for i, text in enumerate(texts, 1):
        if bad := alphabet.unknown_chars(text):
            raise ValueError(f"{where}line {i} {text!r}: {who} cannot handle character(s) {bad}")


def read_candidates(offsets: list[np.ndarray], texts: list[str], recognizer, rec_meta: dict) -> tuple[list[float], list[str]]:
    """(CER against its text, reading) of every written line, read by the recognizer."""
    readings = read_steps(recognizer, rec_meta, offsets)
    return [Levenshtein.distance(r, t) / max(len(t), 1) for r, t in zip(readings, texts)], readings


def pick(cers: list[float], synth, synth_meta: dict, offsets: list[np.ndarray], texts: list[str]) -> tuple[int, np.ndarray]:
    """Index of the best of K candidates of one text (lowest CER; ties: the likelier under the
    synthesis network), and every candidate's mean log-likelihood per point (zeros for K = 1)."""
    loglik = np.zeros(len(offsets))
    if len(offsets) > 1 and min(cers) == sorted(cers)[1]:  # a tie for the best: ask the network itself
        lines = [{"offsets": np.vstack([np.zeros((1, 3), np.float32), o]), "text": t} for o, t in zip(offsets, texts)]
        loglik = line_log_likelihoods(synth, lines, synth_meta)
    return min(range(len(offsets)), key=lambda j: (cers[j], -loglik[j])), loglik


def write_best(synth, synth_meta: dict, recognizer, rec_meta: dict, texts: list[str], bias: float, seed: int,
               best_of: int = 1, score=None, prime=None) -> list[Written]:
    """Write every text ``best_of`` times in one batch and keep each text's best candidate.

    ``prime``: (offsets, text) to write in a writer's style (`synthesize`). ``score(results, texts) ->
    (cer per candidate, reading per candidate)`` may replace the recognizer (tests inject one)."""
    if not 1 <= best_of <= MAX_BEST_OF:
        raise ValueError(f"best_of must be between 1 and {MAX_BEST_OF}, got {best_of}")
    wanted = [t for t in texts for _ in range(best_of)]
    results = synthesize(synth, synth_meta, wanted, bias=bias, seed=seed, prime=prime)
    offsets = [r.offsets for r in results]
    cers, readings = (score or (lambda _, t: read_candidates(offsets, t, recognizer, rec_meta)))(results, wanted)
    out = []
    for i in range(len(texts)):
        k = slice(i * best_of, (i + 1) * best_of)
        j, loglik = pick(cers[k], synth, synth_meta, offsets[k], wanted[k])
        chosen = i * best_of + j
        out.append(Written(results[chosen], readings[chosen], cers[chosen], float(loglik[j]), stalled(results[chosen]),
                           best_of))
    return out


def measure(synth, synth_meta: dict, recognizer, rec_meta: dict, texts: list[str], biases: list[float],
            samples: int = 1, best_of: int = 1, seed: int = 0, progress=None) -> dict:
    """Per bias: CER and WER of the recognizer's readings against the texts, the number of stalled
    lines and of samples (``samples`` writings of every text, each the best of ``best_of``)."""
    check_texts(texts, synth_meta, "the synthesis network")
    check_texts(texts, rec_meta, "the recognizer")
    out = {}
    for bias in biases:
        total, stalls = ReadingStats(), 0
        for s in range(samples):
            written = write_best(synth, synth_meta, recognizer, rec_meta, texts, bias,
                                 seed + s * len(texts) * best_of, best_of)
            total = total + reading_stats([w.reading for w in written], texts)
            stalls += sum(w.stalled for w in written)
            if progress is not None:
                progress.advance(len(texts))
        out[f"{bias:g}"] = {"cer": total.cer, "wer": total.wer, "stalls": stalls, "samples": total.lines}
    return out
