"""Evaluating handwriting networks (secs. 4-5), statically or with dynamic evaluation (sec. 3.1: a
gradient step on each batch of lines *after* scoring it): nats per line (the paper's log-loss,
eq. 26 summed over a line), nats per point and the SSE of the mixture mean. Text's counterpart is
`seqgen.evaluate`.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from seqgen.handwriting.mdn import mixture_nll, split_mixture, sse_per_point
from seqgen.handwriting.models import meta_alphabet
from seqgen.handwriting.prime import as_drawn
from seqgen.handwriting.sampling import normalise, primed
from seqgen.handwriting.task import LineStats


def _line_batch(lines: list[dict], meta: dict, alphabet, like: torch.Tensor):
    """Stored lines -> (inputs x_1..x_{T-1}, targets x_2..x_T (B, T-1, 3), mask (B, T-1), chars (B, U) | None),
    normalised as in training (``handwriting.task``: x_1 = 0, (dx, dy) by the train-split statistics)."""
    xs = []
    for line in lines:
        x = normalise(line["offsets"], meta, like)
        x[0] = 0  # x_1 = 0: "no prior information" (sec. 2)
        xs.append(x)
    rows = pad_sequence(xs, batch_first=True)  # (B, T, 3)
    lengths = torch.tensor([len(x) for x in xs], device=like.device)
    mask = torch.arange(rows.shape[1] - 1, device=like.device) < (lengths - 1).unsqueeze(1)
    chars = None
    if alphabet is not None:
        chars = pad_sequence([torch.as_tensor(alphabet.encode(line["text"])) for line in lines], batch_first=True)
        chars = chars.to(like.device)
    return rows[:, :-1], rows[:, 1:], mask, chars


def _score(model, group: list[dict], meta: dict, alphabet, like: torch.Tensor, count_from: list[int] | None = None):
    """Teacher-forced eq. 26 over whole lines from a fresh state: (nll per line (B,), mixture params,
    targets, mask). ``count_from[b]``: count only line b's targets from that index on (the points
    after a priming line); the network still reads everything before."""
    x, target, mask, chars = _line_batch(group, meta, alphabet, like)
    if count_from is not None:
        first = torch.tensor(count_from, device=mask.device)[:, None]
        mask = mask & (torch.arange(mask.shape[1], device=mask.device) >= first)
    yhat, _ = model(x, model.initial_state(len(group), like.device), chars, None if chars is None else chars != 0)
    params = split_mixture(yhat, model.M)  # eqs. 18-22
    return mixture_nll(params, target, mask).sum(1), params, target, mask  # (B,) eq. 26 per line


@torch.no_grad()
def line_log_likelihoods(model, lines: list[dict], meta: dict, batch_size: int = 16) -> np.ndarray:
    """Mean log-likelihood per predicted point (nats, higher is likelier) of each line, in order:
    how natural the network finds a line, e.g. to rank written candidates."""
    alphabet = meta_alphabet(meta) if model.synthesis else None
    like = model.head.weight
    out = np.zeros(len(lines))
    for i in range(0, len(lines), batch_size):
        group = lines[i : i + batch_size]
        nll, _, _, mask = _score(model, group, meta, alphabet, like)
        out[i : i + len(group)] = (-nll / mask.sum(1).clamp(min=1)).cpu().numpy()
    return out


def evaluate_lines(model, lines: list[dict], meta: dict, batch_size: int = 16, dynamic_lr: float = 0.0,
                   progress=None):
    """Score whole handwriting lines (as ``handwriting.dataset.load_lines`` returns them), each
    from a fresh state; returns their summed ``handwriting.task.LineStats``.

    Statically, lines go in batches of similar length (little padding). ``dynamic_lr > 0``: lines
    keep the dataset's order (a form's lines, one writer, follow each other), and after scoring each
    batch one SGD step adapts a copy of the model to what it has read. The step is on the mean loss
    per *point*, so learning rates compare with text's per-token ones (on the per-line loss, ~1000
    nats, even lr 1e-4 wrecked the bundled model: -1134 -> -858 nats/line on IAM-OnDB valid).
    Measured on 40 valid lines, batches of 8, bundled model: static -1122.1 nats/line; dynamic
    lr 1e-3 -1122.6, 1e-2 -1125.3, 3e-2 -1117.2.
    """
    alphabet = meta_alphabet(meta) if model.synthesis else None
    if dynamic_lr > 0:
        model = copy.deepcopy(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=dynamic_lr)
        order = np.arange(len(lines))
    else:
        order = np.argsort([len(line["offsets"]) for line in lines], kind="stable")
    was_training = model.training
    model.eval()
    like = model.head.weight
    total = LineStats()
    try:
        for i in range(0, len(order), batch_size):
            group = [lines[j] for j in order[i : i + batch_size]]
            with torch.set_grad_enabled(dynamic_lr > 0):
                nll, params, target, mask = _score(model, group, meta, alphabet, like)
            with torch.no_grad():
                sse = sse_per_point(params, target, mask)
            total = total + LineStats(nll.sum().item(), len(group), int(mask.sum().item()), sse.sum().item())
            if dynamic_lr > 0:
                optimizer.zero_grad()
                (nll.sum() / mask.sum().clamp(min=1)).backward()
                optimizer.step()
            if progress is not None:
                progress.advance(len(group))
    finally:
        model.train(was_training)
    return total


@torch.no_grad()
@torch.no_grad()
def point_nats(model, meta: dict, lines: list[dict], count_from: list[int] | None = None,
               batch_size: int = 16) -> list[np.ndarray]:
    """Each line's eq. 26 loss at every counted point (nats; lower is likelier), in order."""
    alphabet = meta_alphabet(meta) if model.synthesis else None
    like, out = model.head.weight, []
    for i in range(0, len(lines), batch_size):
        group = lines[i : i + batch_size]
        _, params, target, mask = _score(model, group, meta, alphabet, like,
                                         None if count_from is None else count_from[i : i + batch_size])
        per_point = mixture_nll(params, target, mask).cpu().numpy()
        out += [row[m] for row, m in zip(per_point, mask.cpu().numpy())]
    return out


def nats_per_point(model, meta: dict, lines: list[dict], count_from: list[int] | None = None,
                   batch_size: int = 16) -> np.ndarray:
    """Each line's eq. 26 loss per counted point (nats; lower is likelier), in order."""
    return np.array([p.mean() if len(p) else 0.0 for p in point_nats(model, meta, lines, count_from, batch_size)])


def _by_tenth(points: list[np.ndarray]) -> list[float]:
    """Mean nats in each tenth of the lines (by position along each line), averaged over the lines."""
    return np.mean([[c.mean() for c in np.array_split(p, 10)] for p in points], axis=0).tolist()


def style_transfer(model, meta: dict, lines: list[dict], seed: int = 0, drawn: bool = False) -> dict:
    """Does a prime carry its writer's hand? For every form (one writer) with two or more lines, line
    B (its second) scored alone, after the same writer's line A (its first), and after the first line
    of another writer's form (a seeded choice), counting only B's points (nats per point).
    ``drawn``: the primes reach the network as a drawing of them would (`prime.as_drawn`: scaled to
    the training data's typical size, as ``POST /write``'s ``prime`` does); line B stays as it is.
    """
    forms: dict[str, list[dict]] = {}
    for line in lines:
        forms.setdefault(line["form_id"], []).append(line)
    pairs = [(f, ls[0], ls[1]) for f, ls in forms.items() if len(ls) >= 2]
    if len(pairs) < 2:
        raise ValueError(f"{len(pairs)} form(s) with two or more lines: style transfer needs at least two "
                         "writers (forms) of two lines; pass another --split or --dataset")
    names = [f for f, _, _ in pairs]
    rng = np.random.default_rng(seed)
    shift = rng.integers(1, len(names))  # another writer for every form: a seeded rotation
    others = [forms[names[(i + shift) % len(names)]][0] for i in range(len(names))]
    hand = (lambda line: as_drawn(line, meta)) if drawn else (lambda line: line)  # noqa: E731
    own = [primed(hand(a), b) for _, a, b in pairs]
    other = [primed(hand(o), b) for o, (_, _, b) in zip(others, pairs)]
    points = {"unprimed": point_nats(model, meta, [b for _, _, b in pairs]),
              "own_prime": point_nats(model, meta, [j for j, _ in own], [k for _, k in own]),
              "other_prime": point_nats(model, meta, [j for j, _ in other], [k for _, k in other])}
    unprimed, own_nats, other_nats = (np.array([p.mean() for p in points[k]]) for k in points)
    n = len(pairs)
    return {
        "forms": n,
        "nats_per_point": {"unprimed": float(unprimed.mean()), "own_prime": float(own_nats.mean()),
                           "other_prime": float(other_nats.mean())},
        # where along B a prime costs or helps: its first tenth follows the prime's last stroke
        "by_tenth_of_b": {k: _by_tenth(v) for k, v in points.items()},
        "own_beats_unprimed": int((own_nats < unprimed).sum()),
        "own_beats_other": int((own_nats < other_nats).sum()),
        "per_form": [{"form": f, "line_a": a["line_id"], "line_b": b["line_id"], "other": o["line_id"],
                      "unprimed": float(u), "own_prime": float(s), "other_prime": float(t)}
                     for (f, a, b), o, u, s, t in zip(pairs, others, unprimed, own_nats, other_nats)],
    }


def line_metrics(stats, split: str) -> dict:
    """`LineStats` in the units the paper reports: nats per line, nats per point, SSE per point."""
    return {
        f"{split}_nats_per_line": stats.nll / max(stats.lines, 1),
        f"{split}_nats_per_point": stats.nll / max(stats.points, 1),
        f"{split}_sse_per_point": stats.sse / max(stats.points, 1),  # normalised offset units
        f"{split}_lines": stats.lines,
        f"{split}_points": stats.points,
    }
