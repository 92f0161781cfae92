"""The deep recurrent network of Graves sec. 2 (eqs. 1-5): N stacked layers with skip connections.

    layer 1:   h^1_t = H(x_t, h^1_{t-1})
    layer n:   h^n_t = H([x_t, h^{n-1}_t], h^n_{t-1})     the input skips to every layer
    output:    yhat_t = b_y + sum_n W_{hn,y} h^n_t        every layer feeds the output

so the output layer reads the concatenation of all layers' outputs. With ``skip=False`` it is the
plain stack (char-rnn): layer n reads only layer n-1 and the output reads the top layer.
``extra`` is an optional per-step input every layer also reads (the synthesis window, eq. 53).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_map

from seqgen.models.layers import make_layer


def detach_state(state):
    """Cut the graph at a truncated-BPTT window boundary, keeping the values."""
    return tree_map(lambda t: t.detach() if isinstance(t, Tensor) else t, state)


class DeepRecurrent(nn.Module):
    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int, *,
                 skip: bool = True, dropout: float = 0.0, extra_size: int = 0, **layer_kw):
        super().__init__()
        self.input_size = input_size
        self.skip = skip
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList()
        below = 0
        for n in range(num_layers):
            in_size = (input_size if n == 0 or skip else 0) + below + extra_size
            layer = make_layer(cell, in_size, hidden_size, **layer_kw)
            self.layers.append(layer)
            below = layer.output_size
        outs = [layer.output_size for layer in self.layers]
        self.output_size = sum(outs) if skip else outs[-1]
        self.output_layers = num_layers if skip else 1  # how many layers' outputs the output holds

    def initial_state(self, batch: int, device=None, dtype=None) -> tuple:
        return tuple(layer.initial_state(batch, device, dtype) for layer in self.layers)

    def layer_input(self, n: int, x: Tensor, below: Tensor | None, extra: Tensor | None = None) -> Tensor:
        parts = [x] if n == 0 or self.skip else []
        parts += [t for t in (below, extra) if t is not None]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def forward(self, x: Tensor, state: tuple, extra: Tensor | None = None, start: int = 0,
                below: Tensor | None = None):
        """x (B, T, D) -> (outputs of layers ``start``.. concatenated (B, T, *), new states).

        ``start``/``below`` let a caller run the first layer(s) itself (the synthesis window sits
        between layer 1 and layer 2) and hand the rest of the stack to this fast path.
        """
        outputs, states = [], []
        for n in range(start, len(self.layers)):
            y, s = self.layers[n](self.layer_input(n, x, below, extra), state[n - start])
            below = self.dropout(y)
            outputs.append(below)
            states.append(s)
        out = torch.cat(outputs, dim=-1) if self.skip and len(outputs) > 1 else outputs[-1]
        return out, tuple(states)
