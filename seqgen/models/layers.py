"""Recurrent layers: Graves' LSTM (eqs. 7-11), tanh RNN, GRU and SCRN (RNN-CF).

Every layer maps a sequence ``x (B, T, D)`` and a state tuple to ``y (B, T, output_size)`` and
the new state; one step is simply ``T = 1``, so training, priming and sampling share one path.

The LSTM has two implementations of the same parameters (gate order i, f, g, o as in nn.LSTM):
a fused fast path (``torch._VF.lstm``, the kernel behind nn.LSTM / cuDNN) used when nothing needs
the per-step pre-activations, and a time loop for peepholes and for LSTM-derivative clipping,
which has to reach inside the cell. Both are tested against a naive per-timestep loop.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class _ClipGradient(torch.autograd.Function):
    """Identity forward; clamps the incoming gradient to [-c, c] on the way back."""

    @staticmethod
    def forward(ctx, x: Tensor, c: float) -> Tensor:
        ctx.c = c
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad.clamp(-ctx.c, ctx.c), None


def clip_gradient(x: Tensor, c: float) -> Tensor:
    """Graves' derivative clipping: dL/dx clipped to [-c, c] inside backprop (c <= 0: off)."""
    return _ClipGradient.apply(x, c) if c > 0 and torch.is_grad_enabled() else x


def _uniform_(params, hidden_size: int) -> None:
    bound = 1.0 / math.sqrt(hidden_size)
    for p in params:
        nn.init.uniform_(p, -bound, bound)


class LSTMLayer(nn.Module):
    """One LSTM layer, eqs. 7-11; optional diagonal peepholes w_ci, w_cf, w_co."""

    def __init__(self, input_size: int, hidden_size: int, peephole: bool = False, deriv_clip: float = 0.0):
        super().__init__()
        self.hidden_size = self.output_size = hidden_size
        self.deriv_clip = deriv_clip
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))  # W_x{i,f,c,o}
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))  # W_h{i,f,c,o}
        self.bias = nn.Parameter(torch.empty(4 * hidden_size))
        self.peephole = nn.Parameter(torch.empty(3, hidden_size)) if peephole else None  # w_ci, w_cf, w_co
        _uniform_(self.parameters(), hidden_size)

    def initial_state(self, batch: int, device=None, dtype=None) -> tuple[Tensor, Tensor]:
        z = torch.zeros(batch, self.hidden_size, device=device, dtype=dtype or self.bias.dtype)
        return (z, z.clone())

    @property
    def uses_fast_path(self) -> bool:
        return self.peephole is None and self.deriv_clip <= 0

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]):
        if self.uses_fast_path:
            h0, c0 = state
            weights = [self.weight_ih, self.weight_hh, self.bias, torch.zeros_like(self.bias)]
            y, h, c = torch._VF.lstm(x, (h0[None], c0[None]), weights, True, 1, 0.0, self.training, False, True)
            return y, (h[0], c[0])
        return self._loop(x, state)

    def _loop(self, x: Tensor, state: tuple[Tensor, Tensor]):
        h, c = state
        clip = lambda z: clip_gradient(z, self.deriv_clip)  # noqa: E731  (eq. 7-10 net inputs)
        xw = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight_ih.t()).view(*x.shape[:2], -1)
        outputs = []
        for t in range(x.shape[1]):
            z_i, z_f, z_g, z_o = torch.addmm(xw[:, t], h, self.weight_hh.t()).chunk(4, dim=-1)
            if self.peephole is not None:
                w_ci, w_cf, w_co = self.peephole
                z_i = z_i + w_ci * c  # eq. 7: input gate sees c_{t-1}
                z_f = z_f + w_cf * c  # eq. 8: forget gate sees c_{t-1}
            c = torch.sigmoid(clip(z_f)) * c + torch.sigmoid(clip(z_i)) * torch.tanh(clip(z_g))  # eq. 9
            if self.peephole is not None:
                z_o = z_o + w_co * c  # eq. 10: output gate sees the new c_t
            h = torch.sigmoid(clip(z_o)) * torch.tanh(c)  # eq. 11
            outputs.append(h)
        return torch.stack(outputs, dim=1), (h, c)


class RNNLayer(nn.Module):
    """Elman RNN (tanh) or GRU on the fused kernels of nn.RNN / nn.GRU."""

    def __init__(self, input_size: int, hidden_size: int, kind: str = "rnn"):
        super().__init__()
        gates = {"rnn": 1, "gru": 3}[kind]
        self.kind = kind
        self.hidden_size = self.output_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(gates * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(gates * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(gates * hidden_size))  # GRU needs both (reset gate)
        _uniform_(self.parameters(), hidden_size)

    def initial_state(self, batch: int, device=None, dtype=None) -> tuple[Tensor]:
        return (torch.zeros(batch, self.hidden_size, device=device, dtype=dtype or self.bias_ih.dtype),)

    def forward(self, x: Tensor, state: tuple[Tensor]):
        kernel = torch._VF.rnn_tanh if self.kind == "rnn" else torch._VF.gru
        weights = [self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh]
        y, h = kernel(x, state[0][None], weights, True, 1, 0.0, self.training, False, True)
        return y, (h[0],)


class SCRNLayer(nn.Module):
    """Structurally constrained RNN (Mikolov et al. 2015), the textbook's RNN-CF (MODELS.md sec. 8).

        s_t = (1 - alpha) B x_t + alpha s_{t-1}      slow context, no non-linearity, alpha fixed
        h_t = tanh(P s_t + A x_t + R h_{t-1})
    The layer outputs [h_t, s_t], so the softmax sees both (y_t = softmax(U h_t + V s_t)).
    """

    def __init__(self, input_size: int, hidden_size: int, context_size: int, alpha: float):
        super().__init__()
        self.alpha = alpha
        self.hidden_size, self.context_size = hidden_size, context_size
        self.output_size = hidden_size + context_size
        self.B = nn.Linear(input_size, context_size, bias=False)
        self.hidden = RNNLayer(context_size + input_size, hidden_size, "rnn")  # W_ih = [P, A], W_hh = R

    def initial_state(self, batch: int, device=None, dtype=None):
        dtype = dtype or self.B.weight.dtype
        return (torch.zeros(batch, self.context_size, device=device, dtype=dtype),
                *self.hidden.initial_state(batch, device, dtype))

    def forward(self, x: Tensor, state):
        s, h = state
        bx = (1 - self.alpha) * self.B(x)
        contexts = []
        for t in range(x.shape[1]):  # elementwise only: cheap even as a loop
            s = bx[:, t] + self.alpha * s
            contexts.append(s)
        s_seq = torch.stack(contexts, dim=1)
        h_seq, (h,) = self.hidden(torch.cat([s_seq, x], dim=-1), (h,))
        return torch.cat([h_seq, s_seq], dim=-1), (s, h)


def make_layer(cell: str, input_size: int, hidden_size: int, *, peephole=False, deriv_clip=0.0,
               context_size=40, alpha=0.95) -> nn.Module:
    if cell == "lstm":
        return LSTMLayer(input_size, hidden_size, peephole, deriv_clip)
    if cell in ("rnn", "gru"):
        return RNNLayer(input_size, hidden_size, cell)
    if cell == "scrn":
        return SCRNLayer(input_size, hidden_size, context_size, alpha)
    raise ValueError(f"unknown cell {cell!r} (valid: lstm, rnn, gru, scrn)")
