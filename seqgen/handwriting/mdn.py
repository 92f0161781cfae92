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
from seqgen.rng import normal_pair

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


def apply_bias(params: MixtureParams, bias: float | Tensor) -> MixtureParams:
    """Probability bias b >= 0 (eqs. 61-62): sigma = exp(sigmahat - b), pi = softmax(pihat (1 + b));
    ``bias`` is one number or one per row (...), finite (`draw_mixture` takes b = inf as the mode).

    Exact on already-split parameters, because log_pi = pihat - logsumexp(pihat) differs from pihat
    by a constant and softmax ignores constants. e is not biased (the paper biases pi and sigma only).
    """
    b = torch.as_tensor(bias, dtype=params.mu.dtype, device=params.mu.device)
    if not torch.isfinite(b).all():
        raise ValueError("bias=inf has no finite parameters; draw_mixture takes it as the mixture's mode")
    b = b.expand(params.e_logit.shape)
    return params._replace(log_pi=torch.log_softmax(params.log_pi * (1 + b)[..., None], -1),  # eq. 62
                           log_sigma=params.log_sigma - b[..., None, None])  # eq. 61


def split_mixture(yhat: Tensor, M: int) -> MixtureParams:
    """Raw outputs yhat (..., 6M+1) -> `MixtureParams` (eqs. 18-22); `apply_bias` biases them (eqs. 61-62)."""
    if yhat.shape[-1] != output_size(M):
        raise ValueError(f"expected {output_size(M)} = 6M+1 outputs for M={M}, got {yhat.shape[-1]}")
    ehat, pihat, muhat, sigmahat, rhohat = yhat.split([1, M, 2 * M, 2 * M, M], -1)
    lead = yhat.shape[:-1]
    return MixtureParams(
        e_logit=-ehat.squeeze(-1),  # eq. 18
        log_pi=torch.log_softmax(pihat, -1),  # eq. 19
        mu=muhat.reshape(*lead, M, 2),  # eq. 20
        log_sigma=sigmahat.reshape(*lead, M, 2),  # eq. 21
        rho=torch.tanh(rhohat),  # eq. 22
    )


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


def draw_mixture(params: MixtureParams, bias: Tensor, u: Tensor) -> Tensor:
    """x_{t+1} (..., 3) = (dx, dy, eos) from y_t, each row with its own bias b (...) >= 0 and its
    own M + 3 uniforms u (..., M + 3) in [0, 1) (`seqgen.rng`): every row's draw depends only on them.

    j ~ pi (Gumbel-max on u[:M]), (dx, dy) ~ N(mu^j, sigma^j, rho^j) (Box-Muller on u[M], u[M+1]),
    eos ~ Bernoulli(e) (u[M+2]). As b -> inf, pi puts all mass on the most likely component and
    sigma = exp(sigmahat - b) underflows to 0, so the draw becomes mu^{argmax pi}; rows with
    ``b = inf`` get that limit directly, with eos = 1[e > 0.5] (the Bernoulli's mode).
    """
    M = params.log_pi.shape[-1]
    mode = torch.isinf(bias)
    biased = apply_bias(params, torch.where(mode, torch.zeros_like(bias), bias))  # eqs. 61-62
    log_pi, sigma = biased.log_pi, torch.exp(biased.log_sigma)
    tiny = torch.finfo(u.dtype).tiny
    gumbel = -torch.log((-torch.log(u[..., :M].clamp_min(tiny))).clamp_min(tiny))
    j = torch.where(mode[..., None], log_pi.argmax(-1, keepdim=True), (log_pi + gumbel.to(log_pi.dtype)).argmax(-1, keepdim=True))
    pick = lambda t: t.gather(-1, j).squeeze(-1)  # noqa: E731  component j of an (..., M) tensor
    mu1, mu2 = pick(params.mu[..., 0]), pick(params.mu[..., 1])
    s1, s2, rho = pick(sigma[..., 0]), pick(sigma[..., 1]), pick(params.rho)
    n1, n2 = normal_pair(u[..., M].to(mu1.dtype), u[..., M + 1].to(mu1.dtype))
    dx = torch.where(mode, mu1, mu1 + s1 * n1)
    dy = torch.where(mode, mu2, mu2 + s2 * (rho * n1 + torch.sqrt((1 - rho.square()).clamp_min(0)) * n2))
    e = torch.sigmoid(params.e_logit)
    eos = torch.where(mode, e > 0.5, u[..., M + 2].to(e.dtype) < e).to(dx.dtype)
    return torch.stack([dx, dy, eos], -1)


def clip_output_gradient(yhat: Tensor, c: float | None = 100.0) -> Tensor:
    """Sec. 4: the output derivatives dL/dyhat clipped to [-c, c] inside backprop (identity forward;
    c None, <= 0 or inf: no clipping). The same mechanism as LSTM-derivative clipping."""
    if c is None or c <= 0 or math.isinf(c) or not (torch.is_grad_enabled() and yhat.requires_grad):
        return yhat
    return clip_gradient(yhat, c)
