"""Tests for seqgen.train.optim: Graves' RMSProp (eqs. 38-41), build_optimizer, lr schedules."""

import copy
import math

import pytest
import torch

from seqgen.train.optim import OPTIMIZERS, GravesRMSProp, build_lr_schedule, build_optimizer


def naive_graves(ws, grads, a=0.95, b=0.9, c=1e-4, d=1e-4):
    """Eqs. 38-41 weight by weight in plain Python floats. ws: list of floats, grads: per step."""
    ws = list(ws)
    n, g, D = [0.0] * len(ws), [0.0] * len(ws), [0.0] * len(ws)
    for eps in grads:
        for i, e in enumerate(eps):
            n[i] = a * n[i] + (1 - a) * e * e                        # eq. 38
            g[i] = a * g[i] + (1 - a) * e                            # eq. 39
            D[i] = b * D[i] - c * e / math.sqrt(n[i] - g[i] ** 2 + d)  # eq. 40
            ws[i] = ws[i] + D[i]                                     # eq. 41
    return ws


def flat(params):
    return torch.cat([p.detach().flatten() for p in params])


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("hyper", [{}, dict(lr=0.05, alpha=0.8, momentum=0.5, eps=1e-3)])
def test_graves_rmsprop_matches_naive(foreach, hyper):
    torch.manual_seed(0)
    params = [torch.randn(3, 4, dtype=torch.float64, requires_grad=True),
              torch.randn(5, dtype=torch.float64, requires_grad=True)]
    w0 = flat(params).tolist()
    opt = GravesRMSProp(params, foreach=foreach, **hyper)
    grads = []
    for _ in range(7):
        for p in params:
            p.grad = torch.randn_like(p)
        grads.append(flat(p.grad for p in params).tolist())
        opt.step()
    names = dict(lr="c", alpha="a", momentum="b", eps="d")
    expected = naive_graves(w0, grads, **{names[k]: v for k, v in hyper.items()})
    torch.testing.assert_close(flat(params), torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)


def test_graves_rmsprop_foreach_equals_loop_and_skips_gradless_params():
    torch.manual_seed(1)
    w = [torch.randn(4, 3, requires_grad=True), torch.randn(6, requires_grad=True),
         torch.randn(2, requires_grad=True)]
    v = [x.detach().clone().requires_grad_() for x in w]
    opt_w = GravesRMSProp(w, lr=1e-2, weight_decay=0.1)
    opt_v = GravesRMSProp(v, lr=1e-2, weight_decay=0.1, foreach=False)
    for _ in range(5):
        for x, y in zip(w[:2], v[:2]):  # the last parameter never gets a gradient
            x.grad = torch.randn_like(x)
            y.grad = x.grad.clone()
        opt_w.step()
        opt_v.step()
    torch.testing.assert_close(flat(w), flat(v))
    assert w[2] not in opt_w.state


def test_graves_rmsprop_state_dict_round_trip():
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    x, y = torch.randn(16, 4), torch.randn(16, 2)

    def train(m, opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            opt.step()

    opt = GravesRMSProp(model.parameters(), lr=1e-2)
    train(model, opt, 3)
    state = copy.deepcopy(opt.state_dict())
    assert set(state["state"][0]) == {"n", "g", "D"}
    clone = copy.deepcopy(model)
    opt2 = GravesRMSProp(clone.parameters())  # different lr: restored from the state dict
    opt2.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == 1e-2
    train(model, opt, 4)
    train(clone, opt2, 4)
    torch.testing.assert_close(flat(model.parameters()), flat(clone.parameters()), rtol=0, atol=0)


def test_graves_rmsprop_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="alpha"):
        GravesRMSProp([torch.zeros(1, requires_grad=True)], alpha=1.5)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_build_optimizer_names(name):
    torch.manual_seed(3)
    w = torch.nn.Parameter(torch.randn(10))
    opt = build_optimizer(name, [w], lr=1e-2, momentum=0.5, weight_decay=0.0)
    expected = dict(sgd=torch.optim.SGD, graves_rmsprop=GravesRMSProp,
                    rmsprop=torch.optim.RMSprop, adam=torch.optim.Adam)[name]
    assert type(opt) is expected and opt.param_groups[0]["lr"] == 1e-2
    loss0 = (w ** 2).sum().item()
    for _ in range(20):
        opt.zero_grad()
        (w ** 2).sum().backward()
        opt.step()
    assert (w ** 2).sum().item() < loss0


def test_build_optimizer_passes_momentum_and_weight_decay():
    w = [torch.nn.Parameter(torch.zeros(2))]
    assert build_optimizer("sgd", w, 0.1, momentum=0.99).param_groups[0]["momentum"] == 0.99
    g = build_optimizer("graves_rmsprop", w, 1e-4, weight_decay=1e-3).param_groups[0]
    assert (g["momentum"], g["weight_decay"], g["alpha"], g["eps"]) == (0.9, 1e-3, 0.95, 1e-4)


def test_build_optimizer_unknown_name():
    with pytest.raises(ValueError, match="sgd.*graves_rmsprop.*rmsprop.*adam"):
        build_optimizer("lbfgs", [torch.nn.Parameter(torch.zeros(1))], lr=1.0)


@pytest.mark.parametrize("decay,every,after,expected", [
    (0.5, 3, 2, [1, 1, 1, 1, 1, .5, .5, .5, .25, .25, .25, .125]),
    (0.1, 2, 0, [1, 1, .1, .1, .01, .01, .001]),
    (1.0, 1, 0, [1] * 6),
])
def test_lr_schedule(decay, every, after, expected):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = build_lr_schedule(opt, decay, every, after)
    lrs = []
    for _ in expected:
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([2.0 * e for e in expected])


def test_lr_schedule_state_dict_round_trip():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_lr_schedule(opt, 0.5, 2)
    for _ in range(5):
        opt.step()
        sched.step()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched2 = build_lr_schedule(opt2, 0.9, 7)
    sched2.load_state_dict(sched.state_dict())
    opt2.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.5 ** 3)


def test_lr_schedule_validates():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError):
        build_lr_schedule(opt, 0.5, 0)
