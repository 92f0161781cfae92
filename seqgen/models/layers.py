"""Recurrent layers: Graves' LSTM (eqs. 7-11), tanh RNN, GRU and SCRN (RNN-CF).

Every layer maps a sequence ``x (B, T, D)`` and a state tuple to ``y (B, T, output_size)`` and
the new state; one step is simply ``T = 1``, so training, priming and sampling share one path.

The LSTM has two implementations of the same parameters (gate order i, f, g, o as in nn.LSTM):
a fused fast path (``torch._VF.lstm``, the kernel behind nn.LSTM / cuDNN) used when nothing needs
the per-step pre-activations, and :class:`LSTMFunction` for peepholes and for LSTM-derivative
clipping, which has to reach inside the cell: one autograd node per sequence with a hand-written
BPTT loop. When nothing needs gradients (sampling, priming, export) the same parameters run through
:func:`_lstm_inference`, which saves nothing for a backward pass: the Function's forward loop keeps
every step's gates, h and c, which a one-step sampling call would pay for and throw away. All three
are tested against a naive per-timestep loop.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


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


# ---------------------------------------------------------------------------------------------
# LSTM over a whole sequence with peepholes and derivative clipping (torch-rnn style): one
# autograd node per sequence, a forward loop writing into preallocated buffers and a hand-written
# BPTT loop. Per step only the recurrent matmul and a few in-place elementwise ops on precomputed
# views run; everything that does not depend on the recurrence (activation derivatives, dW_hh,
# peephole gradients) is vectorised over all time steps outside the loops. Time-major inside, so
# every per-step slice of the big buffers is one contiguous block.
def _tanh(x: Tensor, out: Tensor, minus_one: Tensor) -> Tensor:
    """tanh(x) as 2 sigmoid(2x) - 1 into out: ~1.6x faster than torch.tanh on CPU (x86 builds
    vectorise sigmoid, not tanh); exact to rounding (abs. error ~1 ulp of 1)."""
    return torch.add(minus_one, torch.add(x, x, out=out).sigmoid_(), alpha=2, out=out)


def _lstm_forward_loop(xw: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor, peephole: Tensor | None,
                       gates: Tensor, hidden: Tensor, cells: Tensor, tanh_cells: Tensor) -> None:
    """Eqs. 7-11 for every t, in place, all time-major: gates[t] = (i, f, g, o) activations,
    hidden[t + 1] = h_t, cells[t + 1] = c_t (hidden[0] = h_0, cells[0] = c_0), tanh_cells[t] = tanh(c_t)."""
    T, B, n4 = xw.shape
    n = n4 // 4
    w_t = weight_hh.t()  # (n, 4n); row-major is the faster GEMM layout, worth a copy for long sequences
    w_t = w_t.contiguous() if T >= 16 else w_t
    hidden[0].copy_(h0)
    cells[0].copy_(c0)
    minus_one = torch.full((), -1.0, dtype=xw.dtype, device=xw.device)
    G = gates.view(T, B, 4, n)
    xs, gs, hs, cs, tcs = xw.unbind(0), gates.unbind(0), hidden.unbind(0), cells.unbind(0), tanh_cells.unbind(0)
    i_s, f_s, g_s, o_s = (G[:, :, k].unbind(0) for k in range(4))
    ifg_s = gates[:, :, : 3 * n].unbind(0)
    if peephole is not None:
        w_if, w_co = peephole[:2], peephole[2]
        if_s, c_prev_s = G[:, :, :2].unbind(0), cells[:-1].unsqueeze(2).unbind(0)
    for t in range(T):
        gt, g, c, o, tc = gs[t], g_s[t], cs[t + 1], o_s[t], tcs[t]
        torch.addmm(xs[t], hs[t], w_t, out=gt)  # net inputs (peephole terms still missing)
        g.add_(g)  # 2 z_g (x + x: a Python-scalar multiply costs more dispatch time)
        if peephole is None:
            gt.sigmoid_()  # i, f, o and sigmoid(2 z_g) in one op ...
        else:
            if_s[t].addcmul_(c_prev_s[t], w_if)  # eqs. 7, 8: w_ci, w_cf read c_{t-1}
            ifg_s[t].sigmoid_()
        torch.add(minus_one, g, alpha=2, out=g)  # ... -> g = tanh(z_g)
        torch.mul(f_s[t], cs[t], out=c).addcmul_(i_s[t], g)  # eq. 9
        if peephole is not None:
            o.addcmul_(c, w_co).sigmoid_()  # eq. 10: w_co reads the new c_t
        torch.mul(o, _tanh(c, tc, minus_one), out=hs[t + 1])  # eq. 11


def _lstm_backward_loop(grad_y: Tensor, grad_h: Tensor, grad_c: Tensor, weight_hh: Tensor,
                        peephole: Tensor | None, clip: float, gates: Tensor, cells: Tensor,
                        tanh_cells: Tensor, dxw: Tensor) -> Tensor:
    """BPTT: writes dL/d(net input) of every gate and step into dxw (T, B, 4n), each clamped to
    [-clip, clip] when clip > 0 (Graves' LSTM derivative clipping); returns dL/dc_0.
    grad_y (B, T, n) batch-first; everything else time-major."""
    T, B, n4 = gates.shape
    n = n4 // 4
    G = gates.view(T, B, 4, n)
    i, f, g, o = G.unbind(2)
    one = torch.ones((), dtype=gates.dtype, device=gates.device)
    # Local derivatives of the net inputs, all steps at once (dc, dh: gradients of c_t, h_t):
    #   dz_i = dc * g i(1-i),  dz_f = dc * c_{t-1} f(1-f),  dz_g = dc * i (1-g^2),  dz_o = dh * tanh(c) o(1-o)
    #   dc_t += dh * o (1 - tanh^2 c)  [+ dz_o w_co];  dc_{t-1} = dc_t f  [+ dz_i w_ci + dz_f w_cf]
    local = torch.empty_like(G)
    L = local.unbind(2)
    torch.addcmul(G[:, :, :2], G[:, :, :2], G[:, :, :2], value=-1, out=local[:, :, :2])  # s(1 - s): i, f
    torch.addcmul(o, o, o, value=-1, out=L[3])  # ... o
    torch.addcmul(one, g, g, value=-1, out=L[2])  # 1 - g^2
    L[0].mul_(g)
    L[1].mul_(cells[:-1])
    L[2].mul_(i)
    L[3].mul_(tanh_cells)
    dc_dh = torch.addcmul(one, tanh_cells, tanh_cells, value=-1).mul_(o)
    clipped = clip > 0
    if peephole is not None and not clipped:  # without clamps the peephole paths fold into the factors
        dc_dh.addcmul_(L[3], peephole[2])
        f = (L[0] * peephole[0]).addcmul_(L[1], peephole[1]).add_(f)
    dh = torch.empty(B, n, dtype=gates.dtype, device=gates.device)
    dc = grad_c.clone(memory_format=torch.contiguous_format)
    ds, gys, f_s, dc_dh_s = dxw.unbind(0), grad_y.unbind(1), f.unbind(0), dc_dh.unbind(0)
    D = dxw.view(T, B, 4, n)
    dzo_s, dzifg_s, Lo_s, Lifg_s = D[:, :, 3].unbind(0), D[:, :, :3].unbind(0), L[3].unbind(0), local[:, :, :3].unbind(0)
    dc_b = dc.unsqueeze(1)
    if peephole is not None and clipped:
        w_ci, w_cf, w_co = peephole.unbind(0)
        dzi_s, dzf_s = D[:, :, 0].unbind(0), D[:, :, 1].unbind(0)
    for t in range(T - 1, -1, -1):
        if t == T - 1:
            torch.add(gys[t], grad_h, out=dh)
        else:
            torch.addmm(gys[t], ds[t + 1], weight_hh, out=dh)  # + dz_{t+1} W_hh
        if peephole is not None and clipped:
            dz_o = torch.mul(dh, Lo_s[t], out=dzo_s[t]).clamp_(-clip, clip)
            dc.addcmul_(dh, dc_dh_s[t]).addcmul_(dz_o, w_co)
            torch.mul(Lifg_s[t], dc_b, out=dzifg_s[t]).clamp_(-clip, clip)
            dc.mul_(f_s[t]).addcmul_(dzi_s[t], w_ci).addcmul_(dzf_s[t], w_cf)
        else:
            dc.addcmul_(dh, dc_dh_s[t])
            torch.mul(dh, Lo_s[t], out=dzo_s[t])
            torch.mul(Lifg_s[t], dc_b, out=dzifg_s[t])
            if clipped:
                ds[t].clamp_(-clip, clip)
            dc.mul_(f_s[t])
    return dc


def _lstm_inference(xw: Tensor, h: Tensor, c: Tensor, weight_hh: Tensor,
                    peephole: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Eqs. 7-11 when nothing needs gradients (sampling, priming): no saved buffers and the fewest
    ops per step, which is what a one-step call (T = 1) costs. xw (T, B, 4n); y (B, T, n).

    The engine's step and the exported step (TorchScript, ONNX) are this function: it writes into
    no preallocated buffer (ONNX cannot express ``out=``), so export traces it as it is."""
    w_t = weight_hh.t()
    ys = []
    for t in range(xw.shape[0]):
        z_i, z_f, z_g, z_o = torch.addmm(xw[t], h, w_t).chunk(4, 1)
        if peephole is not None:
            z_i = z_i + c * peephole[0]  # eq. 7
            z_f = z_f + c * peephole[1]  # eq. 8
        c = torch.addcmul(z_f.sigmoid() * c, z_i.sigmoid(), z_g.tanh())  # eq. 9
        if peephole is not None:
            z_o = z_o + c * peephole[2]  # eq. 10
        h = z_o.sigmoid() * c.tanh()  # eq. 11
        ys.append(h)
    y = torch.stack(ys, 1) if ys else xw.new_empty(xw.shape[1], 0, xw.shape[2] // 4)
    return y, h, c


class LSTMFunction(torch.autograd.Function):
    """(xw, h_0, c_0, W_hh, peephole, clip) -> (y, h_T, c_T) for a whole sequence.

    xw (T, B, 4n), time-major, = x_t W_ih^T + b: the input part of the four net inputs (gate
    order i, f, g, o); y (B, T, n) batch-first; peephole (3, n) = (w_ci, w_cf, w_co) or None;
    clip > 0 clamps dL/d(net input) of every gate, peephole terms included, to [-clip, clip] inside
    backprop (Graves' LSTM derivative clipping; clip <= 0: exact gradients). Saves the gate
    activations, h, c and tanh(c) of every step (not y, which callers may modify in place).
    Gradients for xw, h_0, c_0, W_hh and peephole; no double backward.
    """

    @staticmethod
    def forward(ctx, xw: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor, peephole: Tensor | None,
                clip: float):
        T, B, n4 = xw.shape
        kw = {"dtype": xw.dtype, "device": xw.device}
        gates = torch.empty(T, B, n4, **kw)
        hidden = torch.empty(T + 1, B, n4 // 4, **kw)
        cells = torch.empty_like(hidden)
        tanh_cells = torch.empty(T, B, n4 // 4, **kw)
        _lstm_forward_loop(xw, h0, c0, weight_hh, peephole, gates, hidden, cells, tanh_cells)
        ctx.clip = float(clip)
        ctx.save_for_backward(weight_hh, peephole, gates, hidden, cells, tanh_cells)
        return hidden[1:].transpose(0, 1).contiguous(), hidden[-1].clone(), cells[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Tensor, grad_h: Tensor, grad_c: Tensor):
        weight_hh, peephole, gates, hidden, cells, tanh_cells = ctx.saved_tensors
        T, B, n4 = gates.shape
        if T == 0:
            return None, grad_h, grad_c, None, None, None
        dxw = torch.empty(T, B, n4, dtype=gates.dtype, device=gates.device)
        dc0 = _lstm_backward_loop(grad_y, grad_h, grad_c, weight_hh, peephole, ctx.clip, gates, cells,
                                  tanh_cells, dxw)
        needs = ctx.needs_input_grad
        dh0 = dxw[0] @ weight_hh if needs[1] else None
        # dW_hh = sum_t dz_t^T h_{t-1}: one matmul over all steps; peepholes: sum_{t,b} dz * c
        d_whh = dxw.view(-1, n4).t() @ hidden[:-1].view(-1, n4 // 4) if needs[3] else None
        d_peep = None
        if peephole is not None and needs[4]:
            n = n4 // 4
            dz, c_prev, c = dxw.view(T * B, n4), cells[:-1].view(T * B, n), cells[1:].view(T * B, n)
            d_peep = torch.stack([(dz[:, :n] * c_prev).sum(0), (dz[:, n : 2 * n] * c_prev).sum(0),  # c_{t-1}
                                  (dz[:, 3 * n :] * c).sum(0)])  # w_co reads c_t
        return dxw, dh0, dc0 if needs[2] else None, d_whh, d_peep, None


def lstm_sequence(xw: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor, peephole: Tensor | None = None,
                  clip: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """Run :class:`LSTMFunction` (see there): xw (T, B, 4n) time-major; returns (y (B, T, n), h_T, c_T)."""
    return LSTMFunction.apply(xw, h0, c0, weight_hh, peephole, clip)


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
        """Peepholes and/or derivative clipping: the whole-sequence :class:`LSTMFunction`.

        The input projection (all time steps at once) stays outside, under autograd, so dW_ih and
        the bias gradient come from one big matmul with the Function's xw-gradient."""
        h0, c0 = state
        B, T, D = x.shape
        xw = torch.addmm(self.bias, x.transpose(0, 1).reshape(T * B, D), self.weight_ih.t()).view(T, B, 4 * self.hidden_size)
        inputs = (xw, h0, c0, self.weight_hh, self.peephole)
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
            y, h, c = lstm_sequence(*inputs, self.deriv_clip)
        else:
            y, h, c = _lstm_inference(*inputs)
        return y, (h, c)


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
    """Structurally constrained RNN (Mikolov et al. 2015), the textbook's RNN-CF (docs/equations.md sec. 10).

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
