"""Recurrent layers against naive per-timestep loops written from the equations (docs/equations.md secs. 2, 10).

Every layer is run in float64 with its *own* parameters and compared on outputs, final states and
gradients (parameters, inputs, initial states). Also: fused fast path == time loop, gradcheck,
LSTM derivative clipping, chunked (truncated-BPTT) == whole-sequence, DeepRecurrent skips (eq. 3).
"""

from __future__ import annotations

import copy

import pytest
import torch

from seqgen.models.layers import LSTMLayer, RNNLayer, SCRNLayer, clip_gradient, make_layer
from seqgen.models.stack import DeepRecurrent, detach_state

B, T, D, H, CTX = 3, 6, 5, 4, 3
ALPHA = 0.9


# ---------------------------------------------------------------------------------------------
# naive references, one time step at a time, straight from the equations
def naive_lstm(layer, x, state, co_reads_previous_cell=False):
    """Graves eqs. 7-11; gate order i, f, g(c), o; peepholes w_ci, w_cf read c_{t-1}, w_co reads c_t."""
    h, c = state
    n = layer.hidden_size
    W, U, b = layer.weight_ih, layer.weight_hh, layer.bias
    Wi, Wf, Wg, Wo = (W[k * n : (k + 1) * n] for k in range(4))
    Ui, Uf, Ug, Uo = (U[k * n : (k + 1) * n] for k in range(4))
    bi, bf, bg, bo = (b[k * n : (k + 1) * n] for k in range(4))
    ys = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        zi = xt @ Wi.T + h @ Ui.T + bi
        zf = xt @ Wf.T + h @ Uf.T + bf
        if layer.peephole is not None:
            zi = zi + layer.peephole[0] * c  # eq. 7, c_{t-1}
            zf = zf + layer.peephole[1] * c  # eq. 8, c_{t-1}
        i, f = torch.sigmoid(zi), torch.sigmoid(zf)
        c_prev = c
        c = f * c + i * torch.tanh(xt @ Wg.T + h @ Ug.T + bg)  # eq. 9
        zo = xt @ Wo.T + h @ Uo.T + bo
        if layer.peephole is not None:
            zo = zo + layer.peephole[2] * (c_prev if co_reads_previous_cell else c)  # eq. 10: c_t
        h = torch.sigmoid(zo) * torch.tanh(c)  # eq. 11
        ys.append(h)
    return torch.stack(ys, 1), (h, c)


def naive_rnn(layer, x, state):
    """Elman: h_t = tanh(W x_t + b_ih + U h_{t-1} + b_hh)."""
    (h,) = state
    ys = []
    for t in range(x.shape[1]):
        h = torch.tanh(x[:, t] @ layer.weight_ih.T + layer.bias_ih + h @ layer.weight_hh.T + layer.bias_hh)
        ys.append(h)
    return torch.stack(ys, 1), (h,)


def naive_gru(layer, x, state):
    """GRU (reset r, update z, candidate n; PyTorch's gate order r, z, n)."""
    (h,) = state
    n_ = layer.hidden_size
    sl = [slice(k * n_, (k + 1) * n_) for k in range(3)]
    ys = []
    for t in range(x.shape[1]):
        gi = [x[:, t] @ layer.weight_ih[s].T + layer.bias_ih[s] for s in sl]
        gh = [h @ layer.weight_hh[s].T + layer.bias_hh[s] for s in sl]
        r = torch.sigmoid(gi[0] + gh[0])
        z = torch.sigmoid(gi[1] + gh[1])
        cand = torch.tanh(gi[2] + r * gh[2])
        h = (1 - z) * cand + z * h
        ys.append(h)
    return torch.stack(ys, 1), (h,)


def naive_scrn(layer, x, state):
    """s_t = (1 - a) B x_t + a s_{t-1};  h_t = tanh(P s_t + A x_t + R h_{t-1} + b); output [h_t, s_t]."""
    s, h = state
    rnn = layer.hidden
    P, A = rnn.weight_ih[:, : layer.context_size], rnn.weight_ih[:, layer.context_size :]
    ys = []
    for t in range(x.shape[1]):
        s = (1 - layer.alpha) * (x[:, t] @ layer.B.weight.T) + layer.alpha * s
        h = torch.tanh(s @ P.T + x[:, t] @ A.T + h @ rnn.weight_hh.T + rnn.bias_ih + rnn.bias_hh)
        ys.append(torch.cat([h, s], -1))
    return torch.stack(ys, 1), (s, h)


KINDS = {
    # name: (factory, naive, expects fast path)
    "lstm_fast": (lambda: LSTMLayer(D, H), naive_lstm, True),
    "lstm_loop": (lambda: LSTMLayer(D, H, deriv_clip=1e9), naive_lstm, False),  # clip never bites
    "lstm_peephole": (lambda: LSTMLayer(D, H, peephole=True), naive_lstm, False),
    "lstm_peephole_clip": (lambda: LSTMLayer(D, H, peephole=True, deriv_clip=1e9), naive_lstm, False),
    "rnn": (lambda: RNNLayer(D, H, "rnn"), naive_rnn, None),
    "gru": (lambda: RNNLayer(D, H, "gru"), naive_gru, None),
    "scrn": (lambda: SCRNLayer(D, H, CTX, ALPHA), naive_scrn, None),
}


def _make(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    factory, naive, fast = KINDS[kind]
    layer = factory().double()
    if fast is not None:
        assert layer.uses_fast_path is fast
    return layer, naive


def _random_state(layer, batch=B, seed=1):
    g = torch.Generator().manual_seed(seed)
    return tuple(0.5 * torch.randn(t.shape, generator=g, dtype=t.dtype) for t in layer.initial_state(batch))


def _leaf(t):
    return t.detach().clone().requires_grad_(True)


def _run_with_grads(fn, layer, x, state, weights):
    """Outputs, final state and gradients of a fixed random projection of everything."""
    x, state = _leaf(x), tuple(_leaf(s) for s in state)
    y, new = fn(layer, x, state)
    loss = (y * weights[0]).sum() + sum((s * w).sum() for s, w in zip(new, weights[1:]))
    params = [p for _, p in sorted(layer.named_parameters())]
    grads = torch.autograd.grad(loss, [x, *state, *params])
    return y.detach(), tuple(s.detach() for s in new), grads


@pytest.mark.parametrize("kind", list(KINDS))
def test_layer_matches_naive_loop(kind):
    layer, naive = _make(kind)
    x = torch.randn(B, T, D, dtype=torch.float64)
    state = _random_state(layer)
    ref_y, ref_state = naive(layer, x, state)
    g = torch.Generator().manual_seed(7)
    weights = [torch.randn(ref_y.shape, generator=g, dtype=torch.float64)]
    weights += [torch.randn(s.shape, generator=g, dtype=torch.float64) for s in ref_state]

    y, new, grads = _run_with_grads(lambda m, a, s: m(a, s), layer, x, state, weights)
    ry, rnew, rgrads = _run_with_grads(naive, layer, x, state, weights)

    assert y.shape == (B, T, layer.output_size)
    torch.testing.assert_close(y, ry, rtol=1e-10, atol=1e-10)
    assert len(new) == len(rnew)
    for a, b in zip(new, rnew):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    names = ["x"] + [f"state{i}" for i in range(len(state))] + [n for n, _ in sorted(layer.named_parameters())]
    for name, a, b in zip(names, grads, rgrads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=lambda m: f"grad {name}: {m}")


def test_peephole_output_gate_reads_new_cell():
    """The comparison is sensitive to where w_co reads: a c_{t-1} output peephole differs."""
    layer, _ = _make("lstm_peephole")
    x = torch.randn(B, 3, D, dtype=torch.float64)
    state = _random_state(layer)
    with torch.no_grad():
        y, _ = layer(x, state)
        right, _ = naive_lstm(layer, x, state)
        wrong, _ = naive_lstm(layer, x, state, co_reads_previous_cell=True)
    torch.testing.assert_close(y, right)
    assert (y - wrong).abs().max() > 1e-4


def test_fast_path_equals_time_loop():
    torch.manual_seed(3)
    fast = LSTMLayer(D, H).double()
    loop = copy.deepcopy(fast)
    loop.deriv_clip = 1e12  # any positive clip forces the loop; this large one never clips
    assert fast.uses_fast_path and not loop.uses_fast_path
    x = torch.randn(B, T, D, dtype=torch.float64)
    state = _random_state(fast)
    weights = [torch.randn(B, T, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64),
               torch.randn(B, H, dtype=torch.float64)]
    ya, sa, ga = _run_with_grads(lambda m, a, s: m(a, s), fast, x, state, weights)
    yb, sb, gb = _run_with_grads(lambda m, a, s: m(a, s), loop, x, state, weights)
    torch.testing.assert_close(ya, yb, rtol=1e-10, atol=1e-10)
    for a, b in zip(sa + ga, sb + gb):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    # float32 too (the training dtype)
    f32, l32 = fast.float(), loop.float()
    x32 = x.float()
    s32 = tuple(s.float() for s in state)
    torch.testing.assert_close(f32(x32, s32)[0], l32(x32, s32)[0], rtol=1e-5, atol=1e-5)


def test_gradcheck_peephole_lstm_loop(gradcheck_lstm_layer):
    torch.manual_seed(4)
    layer = LSTMLayer(3, 2, peephole=True).double()
    assert not layer.uses_fast_path
    assert gradcheck_lstm_layer(layer, 3)


def test_gradcheck_clip_gradient():
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    # identity forward: with a range >= every incoming derivative (unit vectors) it is exact
    assert torch.autograd.gradcheck(lambda t: clip_gradient(t, 1.0), (x,))
    assert torch.autograd.gradcheck(lambda t: torch.tanh(clip_gradient(t * 0.3, 10.0)).sin(), (x,))
    # and it really clamps: a range below 1 changes the Jacobian gradcheck sees
    assert not torch.autograd.gradcheck(lambda t: clip_gradient(t, 0.5), (x,), raise_exception=False)
    # off switch and no-grad mode are the identity (same object)
    assert clip_gradient(x, 0.0) is x
    with torch.no_grad():
        assert clip_gradient(x, 1.0) is x


def test_clip_gradient_clamps_incoming_gradient():
    x = torch.zeros(4, requires_grad=True)
    (clip_gradient(x, 0.25) * torch.tensor([3.0, -3.0, 0.1, -0.2])).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([0.25, -0.25, 0.1, -0.2]))


def test_derivative_clipping_one_step_manual_backprop():
    """dL/dz (z = the four net inputs, before sigmoid/tanh) is clamped to [-c, c]; then it flows
    to W_ih, W_hh, b, x, h_{t-1} linearly. c_{t-1}'s own path (f * c_{t-1}) is not a net input."""
    torch.manual_seed(5)
    c_clip = 0.02
    layer = LSTMLayer(D, H, deriv_clip=c_clip).double()
    x = torch.randn(B, 1, D, dtype=torch.float64)
    h0, c0 = _random_state(layer)
    r = 5 * torch.randn(B, 1, H, dtype=torch.float64)

    xl, hl, cl = _leaf(x), _leaf(h0), _leaf(c0)
    y, _ = layer(xl, (hl, cl))
    (y * r).sum().backward()

    W, U, b = (t.detach() for t in (layer.weight_ih, layer.weight_hh, layer.bias))
    z = _leaf(x[:, 0] @ W.T + h0 @ U.T + b)
    c_prev = _leaf(c0)
    zi, zf, zg, zo = z.chunk(4, -1)
    c1 = torch.sigmoid(zf) * c_prev + torch.sigmoid(zi) * torch.tanh(zg)
    h1 = torch.sigmoid(zo) * torch.tanh(c1)
    dz, dc0 = torch.autograd.grad((h1 * r[:, 0]).sum(), [z, c_prev])
    assert dz.abs().max() > 5 * c_clip  # the clip is active in this example
    dz = dz.clamp(-c_clip, c_clip)

    torch.testing.assert_close(layer.weight_ih.grad, dz.T @ x[:, 0])
    torch.testing.assert_close(layer.weight_hh.grad, dz.T @ h0)
    torch.testing.assert_close(layer.bias.grad, dz.sum(0))
    torch.testing.assert_close(xl.grad[:, 0], dz @ W)
    torch.testing.assert_close(hl.grad, dz @ U)
    torch.testing.assert_close(cl.grad, dc0)


@pytest.mark.parametrize("peephole", [False, True])
def test_derivative_clipping_bounds_bias_gradient(peephole):
    """Each net input's derivative is in [-c, c], so dL/db_j (a sum of B*T of them) is bounded."""
    torch.manual_seed(6)
    c_clip = 1e-3
    clipped = LSTMLayer(D, H, peephole=peephole, deriv_clip=c_clip).double()
    free = copy.deepcopy(clipped)
    free.deriv_clip = 0.0
    x = 3 * torch.randn(B, T, D, dtype=torch.float64)
    r = 10 * torch.randn(B, T, H, dtype=torch.float64)
    grads = []
    for layer in (clipped, free):
        y, _ = layer(x, layer.initial_state(B))
        (y * r).sum().backward()
        grads.append(layer.bias.grad)
    bound = B * T * c_clip
    assert grads[0].abs().max() <= bound + 1e-12
    assert grads[0].abs().max() > 0
    assert grads[1].abs().max() > 10 * bound  # without clipping the bound is far exceeded


@pytest.mark.parametrize("kind", list(KINDS))
def test_chunked_equals_whole_sequence(kind):
    """Truncated BPTT: carrying the state across windows reproduces the one-call forward pass."""
    layer, _ = _make(kind)
    x = torch.randn(B, 8, D, dtype=torch.float64)
    state = _random_state(layer)
    y_full, s_full = layer(x, state)
    ys, s = [], state
    for lo, hi in [(0, 3), (3, 4), (4, 8)]:
        y, s = layer(x[:, lo:hi], s)
        s = detach_state(s)
        ys.append(y)
    torch.testing.assert_close(torch.cat(ys, 1), y_full, rtol=1e-12, atol=1e-12)
    for a, b in zip(s, s_full):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_detach_state_cuts_graph_keeps_values():
    layer, _ = _make("lstm_fast")
    x = torch.randn(B, 2, D, dtype=torch.float64)
    _, s = layer(x, layer.initial_state(B))
    d = detach_state(s)
    assert all(t.requires_grad for t in s) and not any(t.requires_grad for t in d)
    assert all(torch.equal(a, b) for a, b in zip(s, d))


def test_make_layer_kinds_and_error():
    assert isinstance(make_layer("lstm", 3, 4, peephole=True), LSTMLayer)
    assert make_layer("gru", 3, 4).kind == "gru"
    scrn = make_layer("scrn", 3, 4, context_size=2, alpha=0.5)
    assert scrn.output_size == 6 and scrn.alpha == 0.5
    with pytest.raises(ValueError, match="unknown cell 'xyz'"):
        make_layer("xyz", 3, 4)


# ---------------------------------------------------------------------------------------------
# DeepRecurrent (eqs. 1-5)
@pytest.mark.parametrize("cell,per_layer", [("lstm", H), ("gru", H), ("scrn", H + CTX)])
def test_deep_recurrent_sizes(cell, per_layer):
    kw = {"context_size": CTX} if cell == "scrn" else {}
    skip = DeepRecurrent(cell, D, H, 3, skip=True, **kw)
    plain = DeepRecurrent(cell, D, H, 3, skip=False, **kw)
    assert skip.output_size == 3 * per_layer
    assert plain.output_size == per_layer
    in_size = (lambda l: l.B.weight.shape[1]) if cell == "scrn" else (lambda l: l.weight_ih.shape[1])  # noqa: E731
    assert [in_size(l) for l in skip.layers] == [D, D + per_layer, D + per_layer]  # x feeds every layer
    assert [in_size(l) for l in plain.layers] == [D, per_layer, per_layer]
    x = torch.randn(B, T, D)
    for m in (skip, plain):
        y, state = m(x, m.initial_state(B))
        assert y.shape == (B, T, m.output_size)
        assert len(state) == 3
    single = DeepRecurrent(cell, D, H, 1, skip=True, **kw)
    assert single.output_size == per_layer


@pytest.mark.parametrize("skip", [True, False])
def test_deep_recurrent_equals_manual_stack(skip):
    torch.manual_seed(8)
    m = DeepRecurrent("lstm", D, H, 3, skip=skip).double()
    x = torch.randn(B, T, D, dtype=torch.float64)
    state = tuple(_random_state(l, seed=i) for i, l in enumerate(m.layers))
    out, new = m(x, state)
    below, ys = None, []
    for n, layer in enumerate(m.layers):
        inp = x if n == 0 else (torch.cat([x, below], -1) if skip else below)
        below, s = naive_lstm(layer, inp, state[n])
        ys.append(below)
        torch.testing.assert_close(new[n][0], s[0])
        torch.testing.assert_close(new[n][1], s[1])
    expected = torch.cat(ys, -1) if skip else ys[-1]  # eq. 3: the output reads every layer
    torch.testing.assert_close(out, expected)


def test_skip_output_reaches_first_layer_directly():
    """With skips, the output depends on layer 1 even when layers 2..N ignore the layer below;
    without skips it then cannot."""
    for skip, expect in [(True, True), (False, False)]:
        torch.manual_seed(9)
        m = DeepRecurrent("lstm", D, H, 3, skip=skip)
        with torch.no_grad():
            for layer in m.layers[1:]:
                layer.weight_ih[:, -H:] = 0  # the columns that read h^{n-1}
        y, _ = m(torch.randn(B, T, D), m.initial_state(B))
        y.sum().backward()
        reached = m.layers[0].weight_ih.grad is not None and m.layers[0].weight_ih.grad.abs().sum() > 0
        assert bool(reached) is expect
