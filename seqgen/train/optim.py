"""Optimisers and learning-rate schedules.

``GravesRMSProp`` is the RMSProp-with-momentum variant of Graves (2013), eqs. 38-41, used for the
handwriting nets. For every weight w_i with loss gradient eps_i (= dL/dw_i):

    n_i = a n_i + (1 - a) eps_i^2                       # eq. 38  running mean of eps^2
    g_i = a g_i + (1 - a) eps_i                         # eq. 39  running mean of eps
    D_i = b D_i - c eps_i / sqrt(n_i - g_i^2 + d)       # eq. 40  momentum step, eps / std(eps)
    w_i = w_i + D_i                                     # eq. 41

with a = 0.95, b = 0.9, c = 1e-4, d = 1e-4. Unlike torch's ``RMSprop(centered=True)``, d sits
*inside* the square root and the normaliser is applied before the momentum, exactly as printed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

__all__ = ["GravesRMSProp", "OPTIMIZERS", "build_optimizer", "build_lr_schedule"]


class GravesRMSProp(Optimizer):
    """Graves' RMSProp with momentum (eqs. 38-41).

    Args:
        params: parameters or parameter groups.
        lr: c, the learning rate (1e-4).
        alpha: a, the decay of the running moments n and g (0.95).
        momentum: b, the momentum of the step D (0.9).
        eps: d, added to the variance estimate n - g^2 inside the square root (1e-4).
        weight_decay: L2 coefficient folded into the gradient, eps_i += weight_decay * w_i
            (0 in the paper).
        foreach: use the vectorised ``torch._foreach_*`` kernels (default) or a per-tensor loop.

    Per-parameter state (saved by ``state_dict``): ``n`` (eq. 38), ``g`` (eq. 39), ``D`` (eq. 40).
    All three start at zero, so n - g^2 >= 0 by Cauchy-Schwarz (up to rounding, which d absorbs).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-4,
        alpha: float = 0.95,
        momentum: float = 0.9,
        eps: float = 1e-4,
        weight_decay: float = 0.0,
        foreach: bool = True,
    ):
        for name, v, lo, hi in [
            ("lr", lr, 0.0, float("inf")),
            ("alpha", alpha, 0.0, 1.0),
            ("momentum", momentum, 0.0, 1.0),
            ("eps", eps, 0.0, float("inf")),
            ("weight_decay", weight_decay, 0.0, float("inf")),
        ]:
            if not lo <= v <= hi:
                raise ValueError(f"invalid {name}: {v} (expected {lo} <= {name} <= {hi})")
        defaults = dict(lr=lr, alpha=alpha, momentum=momentum, eps=eps,
                        weight_decay=weight_decay, foreach=foreach)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Apply eqs. 38-41 once to every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            w, eps, n, g, D = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("GravesRMSProp does not support sparse gradients")
                state = self.state[p]
                if not state:
                    for k in ("n", "g", "D"):
                        state[k] = torch.zeros_like(p, memory_format=torch.preserve_format)
                w.append(p)
                eps.append(p.grad)
                n.append(state["n"])
                g.append(state["g"])
                D.append(state["D"])
            if w:
                (_foreach_update if group["foreach"] else _single_update)(
                    w, eps, n, g, D, a=group["alpha"], b=group["momentum"], c=group["lr"],
                    d=group["eps"], wd=group["weight_decay"])
        return loss


def _foreach_update(w, eps, n, g, D, *, a, b, c, d, wd):
    """Eqs. 38-41 on lists of tensors with the vectorised ``torch._foreach_*`` kernels."""
    if wd:
        eps = torch._foreach_add(eps, w, alpha=wd)
    torch._foreach_mul_(n, a)
    torch._foreach_addcmul_(n, eps, eps, value=1 - a)       # eq. 38
    torch._foreach_mul_(g, a)
    torch._foreach_add_(g, eps, alpha=1 - a)                # eq. 39
    denom = torch._foreach_addcmul(n, g, g, value=-1.0)     # n - g^2
    torch._foreach_add_(denom, d)
    torch._foreach_sqrt_(denom)
    torch._foreach_mul_(D, b)
    torch._foreach_addcdiv_(D, eps, denom, value=-c)        # eq. 40
    torch._foreach_add_(w, D)                               # eq. 41


def _single_update(w, eps, n, g, D, *, a, b, c, d, wd):
    """Eqs. 38-41, one tensor at a time (reference path)."""
    for w_i, e_i, n_i, g_i, D_i in zip(w, eps, n, g, D):
        if wd:
            e_i = e_i.add(w_i, alpha=wd)
        n_i.mul_(a).addcmul_(e_i, e_i, value=1 - a)                 # eq. 38
        g_i.mul_(a).add_(e_i, alpha=1 - a)                          # eq. 39
        denom = n_i.addcmul(g_i, g_i, value=-1.0).add_(d).sqrt_()  # sqrt(n - g^2 + d)
        D_i.mul_(b).addcdiv_(e_i, denom, value=-c)                  # eq. 40
        w_i.add_(D_i)                                               # eq. 41


def _sgd(params, lr, momentum, weight_decay):
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _graves_rmsprop(params, lr, momentum, weight_decay):
    return GravesRMSProp(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _rmsprop(params, lr, momentum, weight_decay):
    # alpha = 0.95: char-rnn's decay_rate and Graves' a (torch's default is 0.99).
    return torch.optim.RMSprop(params, lr=lr, alpha=0.95, momentum=momentum,
                               weight_decay=weight_decay)


def _adam(params, lr, momentum, weight_decay):
    # ``momentum`` is ignored: Adam keeps its default betas (0.9, 0.999).
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


#: name -> factory(params, lr, momentum, weight_decay)
OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "sgd": _sgd,                        # PTB / Wikipedia runs: lr 1e-4, momentum 0.99 / 0.9
    "graves_rmsprop": _graves_rmsprop,  # handwriting runs, eqs. 38-41
    "rmsprop": _rmsprop,                # char-rnn
    "adam": _adam,                      # textbook chapter: lr 1e-3
}


def build_optimizer(
    name: str,
    params: Iterable[Tensor] | Iterable[dict],
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> Optimizer:
    """Build an optimiser by name: "sgd", "graves_rmsprop", "rmsprop" or "adam".

    ``momentum`` is SGD's momentum, Graves' b, and torch RMSprop's momentum (pass 0 for plain
    char-rnn RMSProp); Adam ignores it. Pass the regulariser's parameters (e.g. the adaptive
    weight-noise log-sigmas) in ``params`` too so that they are trained by the same optimiser.
    """
    key = name.lower().replace("-", "_")
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[key](params, lr, momentum, weight_decay)


@dataclass(frozen=True)
class StepDecay:
    """The lr factor after ``step`` steps: decay^floor(max(0, step - decay_after) / decay_every).

    A callable object rather than a lambda so that ``LambdaLR.state_dict`` (and pickling) keeps it.
    """

    decay: float
    decay_every: int
    decay_after: int = 0

    def __call__(self, step: int) -> float:
        return self.decay ** (max(0, step - self.decay_after) // self.decay_every)


def build_lr_schedule(
    optimizer: Optimizer, decay: float, decay_every: int, decay_after: int = 0
) -> LRScheduler:
    """Keep the lr for ``decay_after`` steps, then multiply it by ``decay`` every ``decay_every``.

    The first decay happens at step ``decay_after + decay_every``; ``decay=1.0`` keeps it constant.
    Call ``scheduler.step()`` once per optimiser step (or per epoch, if the counts are in epochs).
    """
    if not decay > 0:
        raise ValueError(f"decay must be > 0, got {decay}")
    if decay_every < 1 or decay_after < 0:
        raise ValueError(
            f"need decay_every >= 1 and decay_after >= 0, got {decay_every} and {decay_after}")
    return LambdaLR(optimizer, StepDecay(decay, decay_every, decay_after))
