"""LSTMFunction (the whole-sequence peephole / derivative-clipping LSTM with hand-written BPTT)
against the autograd time loop it replaced, kept here as the reference, and against gradcheck.

All comparisons in float64: forward outputs, final states and the gradients of every input
(x, h_0, c_0) and parameter (weight_ih, weight_hh, bias, peephole).
"""

from __future__ import annotations

import copy

import pytest
import torch

from seqgen.models.layers import LSTMFunction, LSTMLayer, clip_gradient, lstm_sequence

B, T, D, H = 3, 7, 5, 4


def reference_loop(layer: LSTMLayer, x, state):
    """The previous LSTMLayer._loop verbatim: a per-step autograd loop, Graves' derivative clipping
    as clip_gradient (dL/dz clamped to [-c, c]) on each gate's net input, peephole terms included."""
    h, c = state
    clip = lambda z: clip_gradient(z, layer.deriv_clip)
    xw = torch.addmm(layer.bias, x.reshape(-1, x.shape[-1]), layer.weight_ih.t()).view(*x.shape[:2], -1)
    outputs = []
    for t in range(x.shape[1]):
        z_i, z_f, z_g, z_o = torch.addmm(xw[:, t], h, layer.weight_hh.t()).chunk(4, dim=-1)
        if layer.peephole is not None:
            w_ci, w_cf, w_co = layer.peephole
            z_i = z_i + w_ci * c
            z_f = z_f + w_cf * c
        c = torch.sigmoid(clip(z_f)) * c + torch.sigmoid(clip(z_i)) * torch.tanh(clip(z_g))
        if layer.peephole is not None:
            z_o = z_o + w_co * c
        h = torch.sigmoid(clip(z_o)) * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs, dim=1), (h, c)


def _layer(peephole=True, deriv_clip=0.0, seed=0, scale=1.0):
    torch.manual_seed(seed)
    layer = LSTMLayer(D, H, peephole=peephole, deriv_clip=deriv_clip).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.mul_(scale)
    return layer


def _inputs(seed=1, scale=1.0, batch=B, steps=T):
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(batch, steps, D, generator=g, dtype=torch.float64)
    h0 = 0.5 * torch.randn(batch, H, generator=g, dtype=torch.float64)
    c0 = 0.5 * torch.randn(batch, H, generator=g, dtype=torch.float64)
    w = [torch.randn(batch, steps, H, generator=g, dtype=torch.float64),
         torch.randn(batch, H, generator=g, dtype=torch.float64),
         torch.randn(batch, H, generator=g, dtype=torch.float64)]
    return x, (h0, c0), w


def _run(fn, layer, x, state, weights):
    """Outputs, final state, and gradients of a random projection w.r.t. x, h0, c0 and all params."""
    layer.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    state = tuple(s.detach().clone().requires_grad_(True) for s in state)
    y, (h, c) = fn(layer, x, state)
    loss = (y * weights[0]).sum() + (h * weights[1]).sum() + (c * weights[2]).sum()
    names = [n for n, _ in sorted(layer.named_parameters())]
    params = [p for _, p in sorted(layer.named_parameters())]
    grads = torch.autograd.grad(loss, [x, *state, *params])
    return y.detach(), (h.detach(), c.detach()), dict(zip(["x", "h0", "c0", *names], grads))


def _assert_same(a, b, tol=1e-10):
    ya, sa, ga = a
    yb, sb, gb = b
    torch.testing.assert_close(ya, yb, rtol=tol, atol=tol)
    for u, v in zip(sa, sb):
        torch.testing.assert_close(u, v, rtol=tol, atol=tol)
    assert ga.keys() == gb.keys()
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], rtol=tol, atol=tol, msg=lambda m, k=name: f"grad {k}: {m}")


# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("peephole", [True, False])
@pytest.mark.parametrize("deriv_clip", [0.0, 1e9, 1.0, 0.05, 1e-3])
def test_fused_matches_reference_loop(peephole, deriv_clip):
    """Outputs, final states and all gradients to 1e-10: exact gradients, a clip that never bites,
    and clips that bite on ~12%, ~60% and nearly all of the net-input derivatives here."""
    layer = _layer(peephole, deriv_clip, scale=2.0)  # big weights: saturating gates, big derivatives
    x, state, weights = _inputs(scale=2.0)
    weights = [10 * w for w in weights]
    fused = _run(lambda m, a, s: m._loop(a, s), layer, x, state, weights)  # (the layer itself would
    # take the nn.LSTM kernel without peepholes and clipping; _loop is LSTMFunction in every case)
    ref = _run(reference_loop, layer, x, state, weights)
    _assert_same(fused, ref)


def test_small_clip_really_clips():
    """The clipped gradients differ from the unclipped ones, and the clamp bounds dL/db."""
    layer = _layer(True, 1e-3, scale=2.0)
    x, state, weights = _inputs(scale=2.0)
    weights = [10 * w for w in weights]
    free = copy.deepcopy(layer)
    free.deriv_clip = 0.0
    clipped = _run(lambda m, a, s: m(a, s), layer, x, state, weights)[2]
    exact = _run(lambda m, a, s: m(a, s), free, x, state, weights)[2]
    assert clipped["bias"].abs().max() <= B * T * 1e-3 + 1e-15
    assert exact["bias"].abs().max() > 10 * B * T * 1e-3
    assert (clipped["peephole"] - exact["peephole"]).abs().max() > 1e-3


def test_fused_matches_reference_with_state_only_loss_and_long_sequence():
    """Loss on the final (h, c) only (grad_y = 0), a longer sequence and a batch of one."""
    layer = _layer(True, 0.02, seed=3)
    x, state, weights = _inputs(seed=4, batch=1, steps=40)
    weights[0] = torch.zeros_like(weights[0])
    _assert_same(_run(lambda m, a, s: m(a, s), layer, x, state, weights),
                 _run(reference_loop, layer, x, state, weights))


def test_fused_in_float32_close_to_reference():
    layer = _layer(True, 0.1).float()
    x, state, weights = _inputs()
    x, state, weights = x.float(), tuple(s.float() for s in state), [w.float() for w in weights]
    _assert_same(_run(lambda m, a, s: m(a, s), layer, x, state, weights),
                 _run(reference_loop, layer, x, state, weights), tol=1e-4)


# ---------------------------------------------------------------------------------------------
# gradcheck of the Function itself: xw (T, B, 4H) time-major, h0, c0, W_hh, peephole
def _function_inputs(seed=5, steps=4, batch=2, n=3):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_(True)
    return r(steps, batch, 4 * n), r(batch, n), r(batch, n), r(4 * n, n), r(3, n)


@pytest.mark.parametrize("clip", [0.0, 1e6])
def test_gradcheck_function_with_peepholes(clip):
    """clip = 1e6 is far above any derivative here, so the clamped backward is exact too."""
    inputs = _function_inputs()
    assert torch.autograd.gradcheck(lambda *a: LSTMFunction.apply(*a, clip), inputs)


@pytest.mark.parametrize("clip", [0.0, 1e6])
def test_gradcheck_function_without_peepholes(clip):
    xw, h0, c0, w, _ = _function_inputs(seed=6)
    assert torch.autograd.gradcheck(lambda *a: LSTMFunction.apply(*a, None, clip), (xw, h0, c0, w))


def test_gradcheck_function_small_clip_fails():
    """Sanity: a clip below the real derivatives changes the Jacobian (so gradcheck can see it)."""
    inputs = _function_inputs()
    assert not torch.autograd.gradcheck(lambda *a: LSTMFunction.apply(*a, 1e-3), inputs, raise_exception=False)


def test_gradcheck_layer_with_clip_through_parameters(gradcheck_lstm_layer):
    """Whole layer (input projection under autograd + Function) w.r.t. x, h0, c0 and parameters."""
    torch.manual_seed(7)
    assert gradcheck_lstm_layer(LSTMLayer(3, 2, peephole=True, deriv_clip=1e6).double(), 3)


# ---------------------------------------------------------------------------------------------
# carried state
@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_carried_state_gradients(clip):
    """h0 / c0 carried from a previous window: their gradients equal the reference's, and
    chaining two windows through the (non-detached) state equals one long window."""
    layer = _layer(True, clip, seed=8)
    x, state, weights = _inputs(seed=9, steps=8)

    def two_windows(m, a, s):
        y1, s1 = m(a[:, :3], s)
        y2, s2 = m(a[:, 3:], s1)
        return torch.cat([y1, y2], 1), s2

    whole = _run(lambda m, a, s: m(a, s), layer, x, state, weights)
    chained = _run(two_windows, layer, x, state, weights)
    ref = _run(reference_loop, layer, x, state, weights)
    _assert_same(whole, ref)
    _assert_same(chained, ref)
    assert whole[2]["h0"].abs().max() > 0 and whole[2]["c0"].abs().max() > 0


def test_state_gradients_only_needed_for_some_inputs():
    """Inputs that do not require grad get None; the rest still match the reference."""
    layer = _layer(True, 0.05, seed=10)
    x, (h0, c0), _ = _inputs(seed=11)
    h0 = h0.requires_grad_(True)  # c0 and x constant
    y, (_, c) = layer(x, (h0, c0))
    (y.sum() + c.sum()).backward()
    ref_layer = copy.deepcopy(layer)
    ref_layer.zero_grad(set_to_none=True)
    h0r = h0.detach().clone().requires_grad_(True)
    yr, (_, cr) = reference_loop(ref_layer, x, (h0r, c0))
    (yr.sum() + cr.sum()).backward()
    torch.testing.assert_close(h0.grad, h0r.grad, rtol=1e-10, atol=1e-10)
    for (name, p), pr in zip(layer.named_parameters(), ref_layer.parameters()):
        torch.testing.assert_close(p.grad, pr.grad, rtol=1e-10, atol=1e-10, msg=lambda m, k=name: f"{k}: {m}")


def test_frozen_weights_and_no_grad():
    layer = _layer(True, 0.05, seed=12)
    x, state, _ = _inputs(seed=13)
    for p in layer.parameters():
        p.requires_grad_(False)
    xl = x.clone().requires_grad_(True)
    y, _ = layer(xl, state)
    y.sum().backward()
    assert xl.grad is not None and xl.grad.abs().max() > 0
    with torch.no_grad():
        y2, (h, c) = layer(x, state)
        yr, (hr, cr) = reference_loop(layer, x, state)
    torch.testing.assert_close(y2, yr, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, hr, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c, cr, rtol=1e-12, atol=1e-12)


def test_output_may_be_modified_in_place():
    """y is not saved for backward: an in-place op on it (e.g. dropout(inplace=True)) is fine."""
    layer = _layer(True, 0.0, seed=14)
    x, state, _ = _inputs(seed=15)
    y, _ = layer(x, state)
    y.mul_(2)
    y.sum().backward()
    assert layer.weight_hh.grad is not None


def test_lstm_sequence_shapes_and_single_step():
    xw, h0, c0, w, p = (t.detach() for t in _function_inputs(steps=1, batch=3, n=4))
    y, h, c = lstm_sequence(xw, h0, c0, w, p, 0.5)
    assert y.shape == (3, 1, 4) and h.shape == c.shape == (3, 4)
    torch.testing.assert_close(y[:, 0], h)
    assert y.is_contiguous()


@pytest.mark.parametrize("peephole", [True, False])
def test_inference_path_matches_function(peephole):
    """Without gradients (sampling, priming) the layer skips LSTMFunction and its saved buffers;
    same values, whole sequence and one step at a time."""
    layer = _layer(peephole, 0.05, seed=16)
    x, state, _ = _inputs(seed=17)
    y, (h, c) = layer(x, state)  # parameters require grad: LSTMFunction
    assert y.grad_fn is not None
    with torch.no_grad():
        y_inf, (h_inf, c_inf) = layer(x, state)
        s, steps = state, []
        for t in range(T):
            out, s = layer(x[:, t : t + 1], s)
            steps.append(out)
    for a, b in [(y_inf, y), (h_inf, h), (c_inf, c), (torch.cat(steps, 1), y), (s[0], h), (s[1], c)]:
        torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-12)
    ref_y, (ref_h, ref_c) = reference_loop(layer, x, state)
    for a, b in [(y_inf, ref_y), (h_inf, ref_h), (c_inf, ref_c)]:
        torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-12)
