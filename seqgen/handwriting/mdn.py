"""Mixture density output for pen offsets (Graves sec. 4, eqs. 15-26) and biased sampling (eqs. 61-62).

The network emits yhat (..., 6M + 1) laid out as

    [ ehat (1) | pihat (M) | muhat (M, 2) | sigmahat (M, 2) | rhohat (M) ]

with (M, 2) blocks component-major: (mu^1_1, mu^1_2, mu^2_1, ...). Everything stays in log space:
`MixtureParams` holds log pi and log sigma, and e as the logit of e (e = sigmoid(e_logit)).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from seqgen.models.layers import clip_gradient

LOG_2PI = math.log(2 * math.pi)


class MixtureParams(NamedTuple):
    """y_t of eqs. 18-22; leading dims (...) are e.g. (B, T)."""

    e_logit: Tensor  # (...)       e = sigmoid(e_logit) = 1 / (1 + exp(ehat)), so e_logit = -ehat  (eq. 18)
    log_pi: Tensor  # (..., M)     log softmax(pihat)                                               (eq. 19)
    mu: Tensor  # (..., M, 2)                                                                       (eq. 20)
    log_sigma: Tensor  # (..., M, 2) = sigmahat                                                     (eq. 21)
    rho: Tensor  # (..., M)        tanh(rhohat)                                                     (eq. 22)


def output_size(M: int) -> int:
    """6M + 1 raw outputs (121 for M = 20)."""
    return 6 * M + 1


def apply_bias(params: MixtureParams, bias: float) -> MixtureParams:
    """Probability bias b >= 0 (eqs. 61-62): sigma = exp(sigmahat - b), pi = softmax(pihat (1 + b)).

    Exact on already-split parameters, because log_pi = pihat - logsumexp(pihat) differs from pihat
    by a constant and softmax ignores constants. e is not biased (the paper biases pi and sigma only).
    """
    if bias == 0:
        return params
    if math.isinf(bias):
        raise ValueError("bias=inf has no finite parameters; sample_mixture handles it as the mode")
    return params._replace(log_pi=torch.log_softmax(params.log_pi * (1 + bias), -1), log_sigma=params.log_sigma - bias)


def split_mixture(yhat: Tensor, M: int, bias: float = 0.0) -> MixtureParams:
    """Raw outputs yhat (..., 6M+1) -> `MixtureParams` (eqs. 18-22), optionally biased (eqs. 61-62)."""
    if yhat.shape[-1] != output_size(M):
        raise ValueError(f"expected {output_size(M)} = 6M+1 outputs for M={M}, got {yhat.shape[-1]}")
    ehat, pihat, muhat, sigmahat, rhohat = yhat.split([1, M, 2 * M, 2 * M, M], -1)
    lead = yhat.shape[:-1]
    params = MixtureParams(
        e_logit=-ehat.squeeze(-1),  # eq. 18
        log_pi=torch.log_softmax(pihat, -1),  # eq. 19
        mu=muhat.reshape(*lead, M, 2),  # eq. 20
        log_sigma=sigmahat.reshape(*lead, M, 2),  # eq. 21
        rho=torch.tanh(rhohat),  # eq. 22
    )
    return apply_bias(params, bias)


def component_log_density(params: MixtureParams, x: Tensor, eps: float = 1e-6) -> Tensor:
    """log N(x | mu^j, sigma^j, rho^j) for every component j (eqs. 24-25): x (..., 2) -> (..., M).

    1 - rho^2 is clamped below by ``eps`` so |rho| -> 1 (tanh saturating in float32) stays finite.
    """
    z = (x.unsqueeze(-2) - params.mu) * torch.exp(-params.log_sigma)  # (x - mu) / sigma, (..., M, 2)
    z1, z2 = z.unbind(-1)
    one_m_rho2 = (1 - params.rho.square()).clamp_min(eps)
    Z = z1.square() + z2.square() - 2 * params.rho * z1 * z2  # eq. 25
    return -LOG_2PI - params.log_sigma.sum(-1) - 0.5 * torch.log(one_m_rho2) - Z / (2 * one_m_rho2)  # log eq. 24


def mixture_nll(params: MixtureParams, target: Tensor, mask: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """Per-step loss of eq. 26: target x_{t+1} (..., 3) = (dx, dy, eos) -> nll (...), in nats.

    -log sum_j pi^j N(x | ...) by logsumexp, minus log e (eos = 1) or log(1 - e) (eos = 0) by
    log-sigmoid. ``mask`` (...) bool/0-1: padded steps give exactly 0 (whatever their target holds).
    """
    log_mix = torch.logsumexp(params.log_pi + component_log_density(params, target[..., :2], eps), -1)
    eos = target[..., 2]
    log_bern = eos * F.logsigmoid(params.e_logit) + (1 - eos) * F.logsigmoid(-params.e_logit)
    nll = -(log_mix + log_bern)
    return nll if mask is None else torch.where(mask.bool(), nll, torch.zeros_like(nll))


def mixture_mean(params: MixtureParams) -> Tensor:
    """The mixture's mean offset sum_j pi^j mu^j: (..., 2)."""
    return (params.log_pi.exp().unsqueeze(-1) * params.mu).sum(-2)


def sse_per_point(params: MixtureParams, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Sum-squared error of the mean prediction against the target offsets (dx, dy): (...)."""
    sse = (mixture_mean(params) - target[..., :2]).square().sum(-1)
    return sse if mask is None else torch.where(mask.bool(), sse, torch.zeros_like(sse))


def sample_mixture(params: MixtureParams, bias: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """Draw x_{t+1} (..., 3) = (dx, dy, eos) from y_t, with probability bias b (eqs. 61-62).

    j ~ pi (Gumbel-max), (dx, dy) ~ N(mu^j, sigma^j, rho^j), eos ~ Bernoulli(e). As b -> inf, pi
    puts all mass on the most likely component (the runner-up keeps odds exp(-b * gap in log pi)) and
    sigma = exp(sigmahat - b) underflows to 0, so the draw becomes mu^{argmax pi} exactly.
    ``bias=float('inf')`` returns that limit directly, with eos = 1[e > 0.5] (the mode of the
    Bernoulli) in place of a draw; for finite b, eos is always a Bernoulli(e) draw. The bias adds
    to any given to `split_mixture`: pass it in one place.
    """
    if math.isinf(bias):
        j = params.log_pi.argmax(-1, keepdim=True)  # (..., 1)
        xy = params.mu.gather(-2, j.unsqueeze(-1).expand(*j.shape, 2)).squeeze(-2)
        return torch.cat([xy, (params.e_logit > 0).to(xy.dtype).unsqueeze(-1)], -1)
    p = apply_bias(params, bias)

    def rand(*shape):
        return torch.rand(shape, generator=generator, dtype=p.mu.dtype, device=p.mu.device)

    tiny = torch.finfo(p.mu.dtype).tiny
    gumbel = -torch.log((-torch.log(rand(*p.log_pi.shape).clamp_min(tiny))).clamp_min(tiny))
    j = (p.log_pi + gumbel).argmax(-1, keepdim=True)  # (..., 1)
    pick = lambda t: t.gather(-1, j).squeeze(-1)  # noqa: E731  component j of an (..., M) tensor
    mu1, mu2 = p.mu.unbind(-1)
    s1, s2 = p.log_sigma.exp().unbind(-1)
    rho = pick(p.rho)
    n1, n2 = torch.randn((2, *j.shape[:-1]), generator=generator, dtype=p.mu.dtype, device=p.mu.device)
    dx = pick(mu1) + pick(s1) * n1
    dy = pick(mu2) + pick(s2) * (rho * n1 + torch.sqrt((1 - rho.square()).clamp_min(0)) * n2)
    eos = (rand(*j.shape[:-1]) < torch.sigmoid(p.e_logit)).to(dx.dtype)
    return torch.stack([dx, dy, eos], -1)


def clip_output_gradient(yhat: Tensor, c: float | None = 100.0) -> Tensor:
    """Sec. 4: the output derivatives dL/dyhat clipped to [-c, c] inside backprop (identity forward;
    c None, <= 0 or inf: no clipping). The same mechanism as LSTM-derivative clipping."""
    if c is None or c <= 0 or math.isinf(c) or not (torch.is_grad_enabled() and yhat.requires_grad):
        return yhat
    return clip_gradient(yhat, c)
