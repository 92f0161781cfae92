"""Mixture density output (eqs. 15-26), probability bias (eqs. 61-62) and output-gradient clipping."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from seqgen.handwriting.mdn import (
    apply_bias,
    clip_output_gradient,
    mixture_mean,
    mixture_nll,
    draw_mixture,
    output_size,
    split_mixture,
    sse_per_point,
)


def sample_mixture(params, bias: float = 0.0, generator: torch.Generator | None = None):
    """One draw per row with one bias for all rows and uniforms from ``generator`` (`draw_mixture`)."""
    M = params.log_pi.shape[-1]
    u = torch.rand((*params.log_pi.shape[:-1], M + 3), generator=generator, dtype=params.mu.dtype)
    return draw_mixture(params, torch.full(params.e_logit.shape, float(bias), dtype=params.mu.dtype), u)

M = 5


def random_yhat(*lead, M=M, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*lead, output_size(M), generator=g, dtype=dtype)


def random_target(*lead, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    eos = torch.randint(0, 2, (*lead, 1), generator=g).to(dtype)
    return torch.cat([torch.randn(*lead, 2, generator=g, dtype=dtype), eos], -1)


def test_split_mixture_eqs_18_to_22():
    yhat = random_yhat(4, 3)
    p = split_mixture(yhat, M)
    assert p.e_logit.shape == (4, 3) and p.log_pi.shape == (4, 3, M)
    assert p.mu.shape == p.log_sigma.shape == (4, 3, M, 2) and p.rho.shape == (4, 3, M)
    torch.testing.assert_close(torch.sigmoid(p.e_logit), 1 / (1 + torch.exp(yhat[..., 0])))  # eq. 18 sign
    torch.testing.assert_close(p.log_pi.exp().sum(-1), torch.ones(4, 3, dtype=yhat.dtype))
    torch.testing.assert_close(p.mu[..., 1, :], yhat[..., 1 + M + 2 : 1 + M + 4])  # component-major layout
    torch.testing.assert_close(p.log_sigma[..., 0, 1], yhat[..., 1 + 3 * M + 1])
    assert (p.rho.abs() < 1).all()
    with pytest.raises(ValueError, match="6M\\+1"):
        split_mixture(yhat, M + 1)


def test_nll_matches_scipy():
    yhat, x = random_yhat(6, 7) * 1.5, random_target(6, 7)
    p = split_mixture(yhat, M)
    nll = mixture_nll(p, x).numpy()
    pi, mu, rho, e = p.log_pi.exp().numpy(), p.mu.numpy(), p.rho.numpy(), torch.sigmoid(p.e_logit).numpy()
    s, xn = p.log_sigma.exp().numpy(), x.numpy()
    for idx in np.ndindex(6, 7):
        dens = 0.0
        for j in range(M):
            (s1, s2), r = s[idx][j], rho[idx][j]
            cov = [[s1**2, r * s1 * s2], [r * s1 * s2, s2**2]]
            dens += pi[idx][j] * multivariate_normal.pdf(xn[idx][:2], mean=mu[idx][j], cov=cov)
        bern = e[idx] if xn[idx][2] == 1 else 1 - e[idx]
        assert nll[idx] == pytest.approx(-math.log(dens) - math.log(bern), rel=1e-9, abs=1e-9)


def test_nll_gradcheck_float64():
    yhat, x = random_yhat(2, 2, M=2).requires_grad_(), random_target(2, 2)
    assert torch.autograd.gradcheck(lambda y: mixture_nll(split_mixture(y, 2), x), (yhat,))
    assert torch.autograd.gradcheck(lambda y: mixture_nll(apply_bias(split_mixture(y, 2), 0.5), x).sum(), (yhat,))


def test_nll_finite_at_extremes_float32():
    yhat = random_yhat(4, 8, dtype=torch.float32) * 50  # saturated tanh (rho = +-1), tiny/huge sigma, |ehat| ~ 100
    yhat[..., 1 + 3 * M :] = -30.0  # rho=tanh(-30)=-1 in float32, sigma = exp(-30)
    yhat.requires_grad_()
    x = random_target(4, 8, dtype=torch.float32)
    nll = mixture_nll(split_mixture(yhat, M), x)
    nll.sum().backward()
    assert torch.isfinite(nll).all() and torch.isfinite(yhat.grad).all()


def test_mask_zeroes_padding_even_with_garbage_targets():
    p = split_mixture(random_yhat(2, 4), M)
    x = random_target(2, 4)
    x[1, 2:] = float("inf")
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    nll, sse = mixture_nll(p, x, mask), sse_per_point(p, x, mask)
    assert torch.isfinite(nll).all() and (nll[1, 2:] == 0).all() and (sse[1, 2:] == 0).all()
    torch.testing.assert_close(nll[0], mixture_nll(p, x)[0])


def test_mean_and_sse():
    p = split_mixture(random_yhat(3), M)
    mean = mixture_mean(p)
    torch.testing.assert_close(mean, (p.log_pi.exp()[..., None] * p.mu).sum(-2))
    x = torch.cat([mean + torch.tensor([3.0, 4.0], dtype=mean.dtype), torch.ones(3, 1, dtype=mean.dtype)], -1)
    torch.testing.assert_close(sse_per_point(p, x), torch.full((3,), 25.0, dtype=mean.dtype))


def test_bias_on_split_params_equals_bias_on_raw_outputs():
    yhat, b = random_yhat(5), 0.7
    pihat, sigmahat = yhat[..., 1 : 1 + M], yhat[..., 1 + 3 * M : 1 + 5 * M]
    biased = apply_bias(split_mixture(yhat, M), b)
    torch.testing.assert_close(biased.log_pi.exp(), torch.softmax(pihat * (1 + b), -1))  # eq. 62
    torch.testing.assert_close(biased.log_sigma.exp().flatten(-2), torch.exp(sigmahat - b))  # eq. 61
    per_row = apply_bias(split_mixture(yhat, M), torch.tensor([0.0, b, 0.0, b, 2.0], dtype=yhat.dtype))  # one b a row
    torch.testing.assert_close(per_row.log_pi[1], biased.log_pi[1])
    torch.testing.assert_close(per_row.log_pi[0], split_mixture(yhat, M).log_pi[0])
    with pytest.raises(ValueError, match="bias=inf has no finite parameters"):
        apply_bias(split_mixture(yhat, M), math.inf)


def test_large_bias_gives_most_likely_components_mean():
    p = split_mixture(random_yhat(64, dtype=torch.float32, seed=3) * 2, M)
    j = p.log_pi.argmax(-1)
    mode = p.mu[torch.arange(64), j]
    g = torch.Generator().manual_seed(0)
    for b in (1e6, float("inf")):
        x = sample_mixture(p, bias=b, generator=g)
        torch.testing.assert_close(x[:, :2], mode, rtol=0, atol=0)
    assert torch.equal(sample_mixture(p, float("inf"))[:, 2], (torch.sigmoid(p.e_logit) > 0.5).float())
    # a finite bias still draws eos ~ Bernoulli(e)
    q = p._replace(e_logit=torch.zeros(64))
    eos = torch.stack([sample_mixture(q, 1e4, generator=g)[:, 2] for _ in range(50)])
    assert 0.35 < eos.mean() < 0.65


def test_unbiased_samples_have_the_mixture_moments():
    # M = 2: pi = (0.3, 0.7); check mean, covariance per component and eos rate
    log_pi = torch.log(torch.tensor([0.3, 0.7], dtype=torch.float64))
    mu = torch.tensor([[-2.0, 1.0], [6.0, -1.0]], dtype=torch.float64)
    log_sigma = torch.log(torch.tensor([[0.5, 1.0], [1.5, 0.8]], dtype=torch.float64))
    rho = torch.tensor([0.6, -0.4], dtype=torch.float64)
    n = 40000
    p = split_mixture(torch.zeros(n, output_size(2), dtype=torch.float64), 2)._replace(
        e_logit=torch.full((n,), math.log(0.2 / 0.8), dtype=torch.float64),
        log_pi=log_pi.expand(n, 2), mu=mu.expand(n, 2, 2), log_sigma=log_sigma.expand(n, 2, 2), rho=rho.expand(n, 2),
    )
    x = sample_mixture(p, generator=torch.Generator().manual_seed(0))
    assert x[:, 2].mean().item() == pytest.approx(0.2, abs=0.01)
    second = x[:, 0] > 0.5  # the components barely overlap along dx
    assert second.double().mean().item() == pytest.approx(0.7, abs=0.015)
    for comp, sel in ((0, ~second), (1, second)):
        xy = x[sel, :2].numpy()
        s = log_sigma[comp].exp().numpy()
        cov = np.array([[s[0] ** 2, rho[comp] * s[0] * s[1]], [rho[comp] * s[0] * s[1], s[1] ** 2]])
        np.testing.assert_allclose(xy.mean(0), mu[comp].numpy(), atol=0.05)
        np.testing.assert_allclose(np.cov(xy.T), cov, atol=0.08)
    x2 = sample_mixture(p, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)  # the generator makes draws reproducible


def test_output_gradient_clipping():
    yhat = torch.randn(4, output_size(M), dtype=torch.float64, requires_grad=True)
    scale = torch.linspace(-500, 500, output_size(M), dtype=torch.float64)
    (clip_output_gradient(yhat, 100.0) * scale).sum().backward()
    torch.testing.assert_close(yhat.grad, scale.clamp(-100, 100).expand(4, -1))
    y = torch.randn(3, requires_grad=True)
    assert clip_output_gradient(y, None) is y and clip_output_gradient(y.detach(), 100.0) is not None
    out = clip_output_gradient(y, 1.0)
    torch.testing.assert_close(out, y)
