"""A wider network that starts as a trained narrower one (Net2WiderNet: Chen, Goodfellow & Shlens,
"Net2Net", ICLR 2016), so a larger model need not be trained from scratch.

``train.init_from=CKPT model.hidden_size=m*H`` for a checkpoint of H units per layer: new unit
j' = c H + j (copy c = 0..m-1) is a copy of old unit j.

* What a unit computes is copied: its rows of every gate's input and recurrent weights, its biases
  and peepholes. All m copies of a unit then have the same activation at every step.
* What reads a unit is split among its copies: every column that multiplies h_j (the recurrent
  weights, the next layer's input, the synthesis window of eq. 48, the output layer of eq. 17)
  becomes m columns W / m + e_c with noise e_c that sums to zero over the copies. A reader sees
  sum_c (W / m + e_c) h_j = W h_j, exactly what it saw before.

So the wider network computes the narrower one's function (tests/models/test_widen.py, float64),
while the noise sends different gradients to the copies' rows from the first step, so training can
make them differ (without it the copies would stay copies forever).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

NOISE = 0.1  # e_c's scale relative to |W / m|: any value keeps the function; it only breaks the symmetry


def _copy_rows(t: Tensor, hidden: int, factor: int) -> Tensor:
    """(blocks * H, ...) -> (blocks * m H, ...): every gate block's row j' = c H + j is row j."""
    blocks = t.shape[0] // hidden
    units = torch.arange(factor * hidden) % hidden
    return t[torch.cat([b * hidden + units for b in range(blocks)])]


def _split_columns(t: Tensor, offsets: list[int], hidden: int, factor: int, gen: torch.Generator) -> Tensor:
    """(R, D) with units of H columns starting at each of ``offsets`` -> each unit's column split into
    ``factor`` columns W / m + e_c (sum_c e_c = 0), at c H + j of the widened block."""
    pieces, at = [], 0
    for off in sorted(offsets):
        block = t[:, off : off + hidden] / factor
        noise = torch.randn((factor, *block.shape), generator=gen, dtype=t.dtype) * NOISE * block.abs()
        noise -= noise.mean(0)
        pieces += [t[:, at:off], *(block + noise)]  # copy c's columns at c H + j
        at = off + hidden
    pieces.append(t[:, at:])
    return torch.cat(pieces, 1)


def widen_state(old: dict[str, Tensor], model: nn.Module, hidden: int, seed: int = 0) -> dict[str, Tensor]:
    """``old`` (the state dict of ``model``'s architecture with ``hidden`` units per recurrent layer)
    -> a state dict for ``model`` (``model.rnn``: a `DeepRecurrent` of a multiple of ``hidden``
    units), computing the same function. ``model.unit_readers()`` names the weights outside the
    stack that read its units, and which layers' units they read, in order. ValueError when the
    widths are not a multiple or the cell has no units to copy (SCRN)."""
    stack = model.rnn
    new_hidden = stack.layers[0].hidden_size
    if new_hidden % hidden or new_hidden < hidden:
        raise ValueError(f"a network of {new_hidden} units a layer cannot start from one of {hidden}: "
                         "model.hidden_size must be a multiple of the checkpoint's")
    if not all(hasattr(layer, "weight_hh") for layer in stack.layers):
        raise ValueError("only LSTM, RNN and GRU layers can be widened (an SCRN layer's context units are not copies)")
    factor = new_hidden // hidden
    gen = torch.Generator().manual_seed(seed)
    new = dict(old)
    for n, layer in enumerate(stack.layers):
        p = f"rnn.layers.{n}."
        below = [stack.input_size if stack.skip else 0] if n > 0 else []  # where layer n - 1's units enter
        for name, _ in layer.named_parameters():
            t = old[p + name]
            if name == "peephole":  # (3, H): per unit, multiplying the unit's own cell
                new[p + name] = t[:, torch.arange(new_hidden) % hidden]
                continue
            t = _copy_rows(t, hidden, factor)  # weight_ih, weight_hh, biases: rows are (gate, unit)
            if name == "weight_hh":
                t = _split_columns(t, [0], hidden, factor, gen)
            elif name == "weight_ih" and below:
                t = _split_columns(t, below, hidden, factor, gen)
            new[p + name] = t
    for name, blocks in model.unit_readers().items():
        new[name] = _split_columns(old[name], [i * hidden for i in range(blocks)], hidden, factor, gen)
    return new


def initial_weights(model: nn.Module, source, seed: int = 0) -> dict[str, Tensor]:
    """The weights ``train.init_from`` gives ``model``: checkpoint ``source``'s (a `LoadedCheckpoint`),
    widened (`widen_state`) when ``model`` has more units a layer than the checkpoint's network."""
    hidden = source.config.model.hidden_size
    rnn = getattr(model, "rnn", None)
    if rnn is None or rnn.layers[0].hidden_size == hidden:
        return source.model_state
    if not hasattr(model, "unit_readers"):
        raise ValueError(f"a {source.config.model.kind} network cannot start from a narrower one")
    return widen_state(source.model_state, model, hidden, seed)
