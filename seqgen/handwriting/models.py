"""Handwriting prediction (Graves sec. 4) and synthesis (sec. 5) networks: pen offsets -> mixture density.

    prediction   h^n_t from x_t by the deep LSTM with skip connections        eqs. 1-5
    synthesis    layer 1 reads [x_t, w_{t-1}]                                eq. 52
                 (alpha, beta, kappa) = W_{h1,p} h^1_t + b_p -> phi(t, u), w_t  eqs. 46-51
                 layers n >= 2 read [x_t, h^{n-1}_t, w_t]                     eq. 53
    both         yhat_t = b_y + sum_n W_{hn,y} h^n_t   (6M + 1 outputs)       eq. 17, then eqs. 18-22 (mdn.py)

The output layer reads the hidden layers only, not w_t: sec. 5 leaves the output equations
"unchanged" from sec. 4, and the window reaches the output through layers 2..N.

Layer 1 and the window form a recurrence (w_t feeds layer 1 at t + 1, kappa_t = kappa_{t-1} + ...),
so they run as a per-step loop; layers 2..N only *read* w_t, so once the loop has produced the
whole w sequence they run over it in one call of the stack's fast path (`DeepRecurrent` with
``start=1, extra=w``).

The step protocol of every seqgen model::

    state = model.initial_state(B)
    yhat, state = model(x (B, T, 3), state, chars (B, U), char_mask (B, U))   # T = 1: one sampling step
"""

from __future__ import annotations

import json
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqgen.config import ExperimentConfig, ModelConfig
from seqgen.handwriting.iam import Alphabet
from seqgen.handwriting.mdn import output_size
from seqgen.handwriting.window import soft_window
from seqgen.models.stack import DeepRecurrent


class HandwritingState(NamedTuple):
    """Everything carried from step t to t + 1 (batch-first, so rows can be sliced / concatenated)."""

    layers: tuple  # per-layer LSTM states ((h, c), ...), each (B, H)
    kappa: Tensor  # (B, K) window locations kappa_t (eq. 51); (B, 0) in the prediction net
    w: Tensor  # (B, C) window vector w_t (eq. 47), read by layer 1 at t + 1; (B, 0) in the prediction net


class HandwritingModel(nn.Module):
    """The prediction network (``alphabet_size == 0``) or the synthesis network (C = alphabet_size
    one-hot text classes, index 0 = the END/pad dummy)."""

    def __init__(self, cfg: ModelConfig, alphabet_size: int = 0, points_per_char: float | None = None):
        super().__init__()
        if cfg.cell != "lstm":
            raise ValueError(f"the handwriting networks are LSTMs (Graves sec. 4-5); got cell={cfg.cell!r}")
        self.M = cfg.mixture_components
        self.C = alphabet_size
        self.K = cfg.window_components if alphabet_size else 0
        self.rnn = DeepRecurrent(
            "lstm", 3, cfg.hidden_size, cfg.num_layers, skip=cfg.skip, dropout=cfg.dropout,
            extra_size=self.C, peephole=cfg.peephole, deriv_clip=cfg.deriv_clip,
        )  # x_t = (dx, dy, eos) to every layer; w to every layer (eqs. 52-53) when C > 0
        self.window = nn.Linear(cfg.hidden_size, 3 * self.K) if self.C else None  # eq. 48: W_{h1,p}, b_p
        if self.window is not None and points_per_char:
            # Start kappa's step exp(kappahat) (eq. 51) at the data's mean pace, 1 / points_per_char
            # characters per point. With the default bias 0 the window advances one character per
            # point, runs off the end of a ~30-character line within ~30 of its ~650 points and stays
            # there, so the net learns to ignore it (observed: no alignment after 700 updates; with
            # this start the same config aligned within 300, docs/handwriting.md).
            with torch.no_grad():
                self.window.bias[2 * self.K :].fill_(-math.log(points_per_char))
        self.head = nn.Linear(self.rnn.output_size, output_size(self.M))  # eq. 17

    def unit_readers(self) -> dict[str, int]:
        """The weights outside the stack that read its units (`seqgen.models.widen`): the output
        layer (every layer's, with skip connections) and the window (layer 1's)."""
        return {"head.weight": self.rnn.output_layers, **({"window.weight": 1} if self.window is not None else {})}

    @property
    def synthesis(self) -> bool:
        return self.C > 0

    def initial_state(self, batch: int, device=None) -> HandwritingState:
        """Zero LSTM states, kappa_0 = 0 and w_0 = 0."""
        device, dtype = device or self.head.weight.device, self.head.weight.dtype
        zeros = lambda n: torch.zeros(batch, n, device=device, dtype=dtype)  # noqa: E731
        return HandwritingState(self.rnn.initial_state(batch, device, dtype), zeros(self.K), zeros(self.C))

    def forward(self, x: Tensor, state: HandwritingState, chars: Tensor | None = None,
                char_mask: Tensor | None = None, return_phi: bool = False):
        """Next-point mixture outputs for a (chunk of a) sequence.

        Args:
            x: (B, T, 3) normalised inputs x_t = (dx, dy, eos); x_1 = 0 starts a sequence.
            state: from `initial_state` or the previous call.
            chars: (B, U) int64 alphabet indices of the text (synthesis only), 0 = padding.
            char_mask: (B, U) 1/True on real characters; default ``chars != 0``.
            return_phi: also return phi (B, T, U + 1), the window weights of eq. 46 including the
                dummy position U + 1 of the stop rule (None from the prediction network).
        Returns:
            yhat (B, T, 6M + 1) raw outputs (eq. 17; `split_mixture` applies eqs. 18-22), the new
            state, and phi if ``return_phi``.
        """
        phi = None
        if self.synthesis:
            h, state, phi = self._synthesis(x, state, chars, char_mask, return_phi)
        else:
            h, layers = self.rnn(x, state.layers)
            state = state._replace(layers=layers)
        yhat = self.head(h)  # eq. 17; output-derivative clipping is the loss's job (HandwritingTask)
        return (yhat, state, phi) if return_phi else (yhat, state)

    def _synthesis(self, x: Tensor, state: HandwritingState, chars, char_mask, dummy: bool):
        """(B, T, 3) -> hidden outputs (B, T, *) of all layers, new state, phi (B, T, U + 1) or None."""
        if chars is None:
            raise ValueError("the synthesis network needs the text: chars (B, U)")
        mask = chars != 0 if char_mask is None else char_mask.bool()
        onehot = F.one_hot(chars, self.C).to(x.dtype)  # c_u, (B, U, C)
        (s1, *upper_states), kappa, w = state
        layer1 = self.rnn.layers[0]
        h1, ws, phis = [], [], []
        for t in range(x.shape[1]):
            inp = self.rnn.layer_input(0, x[:, t : t + 1], None, w[:, None])  # eq. 52: [x_t, w_{t-1}]
            h, s1 = layer1(inp, s1)  # (B, 1, H)
            # eqs. 46-51; the window reads h^1_t before dropout, as the upper layers read it after
            w, kappa, phi = soft_window(self.window(h[:, 0]), kappa, onehot, mask, dummy=dummy)
            h1.append(h)
            ws.append(w)
            phis.append(phi)
        h = h1 = self.rnn.dropout(torch.cat(h1, 1))  # (B, T, H)
        if len(self.rnn.layers) > 1:  # eq. 53: layers 2..N read [x_t, h^{n-1}_t, w_t], whole sequence at once
            upper, upper_states = self.rnn(x, tuple(upper_states), extra=torch.stack(ws, 1), start=1, below=h1)
            h = torch.cat([h1, upper], -1) if self.rnn.skip else upper  # eq. 17 reads every layer (skip)
        new_state = HandwritingState((s1, *upper_states), kappa, w)
        return h, new_state, torch.stack(phis, 1) if dummy else None


def meta_alphabet(meta: dict) -> Alphabet | None:
    """The text alphabet a checkpoint's meta carries (``Alphabet.to_json()`` string or its dict), or None."""
    a = meta.get("alphabet")
    if not a:
        return None
    return Alphabet.from_json(a if isinstance(a, str) else json.dumps(a))


def build_handwriting_model(cfg: ExperimentConfig, meta: dict) -> HandwritingModel:
    """The network of ``cfg.model.kind`` ("handwriting_prediction" | "handwriting_synthesis");
    ``meta["alphabet"]`` sizes the synthesis net's one-hot text; ``meta["points_per_char"]`` (the
    training lines' mean) sets the window's initial pace."""
    kind = cfg.model.kind
    if kind == "handwriting_prediction":
        return HandwritingModel(cfg.model)
    if kind == "handwriting_synthesis":
        alphabet = meta_alphabet(meta)
        if alphabet is None:
            raise ValueError("handwriting_synthesis needs meta['alphabet'] (Alphabet.to_json())")
        return HandwritingModel(cfg.model, len(alphabet), meta.get("points_per_char"))
    raise ValueError(f"not a handwriting model kind: {kind!r} (valid: handwriting_prediction, handwriting_synthesis)")
