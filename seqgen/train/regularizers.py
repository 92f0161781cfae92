"""Weight-noise regularisers (Graves 2013 sec. 3.1; docs/equations.md sec. 5).

A regulariser perturbs the weights used for one training window without touching the stored ones:

    params = reg.sample(model)                              # {name: w + noise}, differentiable in w
    out = torch.func.functional_call(model, params, args)   # or simply: out = reg(model, *args)
    loss = task_loss(out) + reg.penalty(model)

``sample`` returns *expressions* ``w + noise`` (not detached copies), so ``loss.backward()`` puts
dL/dw' -- the gradient at the noisy weights w' -- into ``w.grad`` (dw'/dw = 1). Evaluate with the
clean weights, i.e. call ``model(...)`` directly (for adaptive noise these are the posterior means).

``torch.nn.LSTM`` / ``GRU`` / ``RNN`` run on a cached list ``_flat_weights``, not on their
attributes, so a naive attribute swap would silently keep the clean weights (pytorch#90500). Since
torch 2.0 (pytorch#91111) ``RNNBase.forward`` first checks whether the parameter tensors changed and
rebuilds ``_flat_weights`` if so, which makes ``functional_call`` correct (tested in tests/train).
The rebuilt list keeps a reference to the last noisy tensors until the next forward call (harmless).

Under DDP, wrap ``Regularized(model, reg)`` rather than the model, so that the regulariser's own
parameters are averaged across workers with the weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

__all__ = [
    "Regularizer", "NoRegularizer", "FixedWeightNoise", "AdaptiveWeightNoise",
    "Regularized", "kl_to_optimal_prior", "build_regularizer", "REGULARIZERS",
]


class Regularizer(nn.Module):
    """Protocol: ``sample`` the weights for a training window and a ``penalty`` for the loss.

    Being an ``nn.Module``, a regulariser exposes any learned state through ``parameters()``
    (train it with the model's optimiser) and ``state_dict()`` / ``load_state_dict()``.
    """

    def sample(self, model: nn.Module) -> dict[str, Tensor]:
        """Parameters to use for this window: ``{name: tensor}`` for ``functional_call``."""
        raise NotImplementedError

    def penalty(self, model: nn.Module) -> Tensor:
        """Scalar added to the per-example loss (zero unless the regulariser has a prior)."""
        p = next(model.parameters(), None)
        return torch.zeros((), device=None if p is None else p.device,
                           dtype=None if p is None else p.dtype)

    def metrics(self) -> dict:
        """Scalars worth logging beside the loss (none unless the regulariser learns something)."""
        return {}

    def forward(self, model: nn.Module, *args, **kwargs):
        """Run ``model(*args, **kwargs)`` with freshly sampled weights."""
        return functional_call(model, self.sample(model), args, kwargs)


class Regularized(nn.Module):
    """``model`` run on ``reg``'s weight sample, as one module holding both.

    This is the module to wrap in DistributedDataParallel: DDP averages the gradients of every
    parameter *of the module it wraps*, so the regulariser's own parameters (adaptive noise's log
    sigma) are averaged across workers exactly like the weights, and every worker keeps the same
    posterior. (Wrapping only ``model`` would leave each worker's sigmas to drift on its own data.)
    ``state_dict`` keys are ``model.*`` and ``reg.*``; checkpoints store the two parts separately.
    """

    def __init__(self, model: nn.Module, reg: Regularizer):
        super().__init__()
        self.model, self.reg = model, reg

    def forward(self, *args, **kwargs):
        return functional_call(self.model, self.reg.sample(self.model), args, kwargs)


class NoRegularizer(Regularizer):
    """The clean weights, no penalty."""

    def sample(self, model: nn.Module) -> dict[str, Tensor]:
        return dict(model.named_parameters())


class FixedWeightNoise(Regularizer):
    """Fixed-variance weight noise: w' = w + N(0, std^2) (Graves 2013 sec. 3.1, std = 0.075).

    Every call draws a fresh sample of *every* parameter -- biases and peepholes included, as in
    the paper ("a fresh sample of every weight") -- so call it once per training sequence/window.
    """

    def __init__(self, std: float = 0.075):
        super().__init__()
        if std < 0:
            raise ValueError(f"std must be >= 0, got {std}")
        self.std = std

    def sample(self, model: nn.Module) -> dict[str, Tensor]:
        return {k: w + self.std * torch.randn_like(w) for k, w in model.named_parameters()}

    def extra_repr(self) -> str:
        return f"std={self.std}"


def kl_to_optimal_prior(mu: Sequence[Tensor], log_sigma: Sequence[Tensor]) -> Tensor:
    """KL(q || p) for q = prod_i N(mu_i, sigma_i^2) and one prior p = N(mu_p, sigma_p^2).

    With the prior at its optimum given q (Graves 2011),

        mu_p = mean_i(mu_i),   sigma_p^2 = mean_i(sigma_i^2 + (mu_i - mu_p)^2),

    the closed-form Gaussian KL per weight,

        KL_i = log(sigma_p / sigma_i) + (sigma_i^2 + (mu_i - mu_p)^2) / (2 sigma_p^2) - 1/2,

    sums over the W weights to W log sigma_p - sum_i log sigma_i (the quadratic terms sum to W/2).
    Its gradient equals that of the KL with the prior held fixed (the prior is a stationary point).
    Reduced tensor by tensor: the weights are never concatenated.
    """
    W = sum(m.numel() for m in mu)
    mu_p = sum(m.sum() for m in mu) / W
    sigma_p2 = sum(((2 * s).exp() + (m - mu_p) ** 2).sum() for m, s in zip(mu, log_sigma)) / W
    return 0.5 * W * sigma_p2.log() - sum(s.sum() for s in log_sigma)


class AdaptiveWeightNoise(Regularizer):
    """Adaptive weight noise (Graves 2011 "Practical Variational Inference"; docs/equations.md sec. 5).

    A diagonal Gaussian posterior q(w) = N(mu, sigma^2) over all weights. The model's own
    parameters are the means mu; this module holds one learned log sigma per weight in
    ``log_sigma`` (a ParameterDict keyed by the parameter name with '.' replaced by '__'), so
    ``parameters()`` must be given to the optimiser alongside the model's. The description
    length of the training set S is E_q[L(S)] + KL(q || p); divided by |S| in the loss's own
    unit it is E_q[mean loss] + KL / |S|, and ``penalty`` is that second term. So
    ``num_examples`` is the size of the *whole* training set (all workers) in the unit the task
    loss averages over: tokens for a mean per token (text), lines for a mean per line
    (handwriting). It does not depend on the batch size, window length or worker count: under
    DDP each worker adds the same penalty and the averaged gradient is that of the mean.

    ``sample`` draws w = mu + sigma * xi, xi ~ N(0, I), once per call, i.e. one sample shared by a
    minibatch of sequences instead of the paper's one per sequence: still an unbiased estimate of
    the expected loss, with somewhat higher gradient variance for B > 1.
    """

    def __init__(self, model: nn.Module, init_std: float = 0.075, num_examples: int = 1):
        super().__init__()
        if init_std <= 0 or num_examples < 1:
            raise ValueError(f"need init_std > 0 and num_examples >= 1, got {init_std}, "
                             f"{num_examples}")
        self.num_examples = num_examples
        self.log_sigma = nn.ParameterDict({
            self.key(k): nn.Parameter(torch.full_like(w.detach(), math.log(init_std)))
            for k, w in model.named_parameters()
        })

    @staticmethod
    def key(name: str) -> str:
        """ParameterDict key of a model parameter name (module keys may not contain '.')."""
        return name.replace(".", "__")

    def sigma(self, name: str) -> Tensor:
        """The posterior standard deviation of the model parameter ``name``."""
        return self.log_sigma[self.key(name)].exp()

    def sample(self, model: nn.Module) -> dict[str, Tensor]:
        return {k: mu + self.sigma(k) * torch.randn_like(mu) for k, mu in model.named_parameters()}

    def penalty(self, model: nn.Module) -> Tensor:
        names, mu = zip(*model.named_parameters())
        kl = kl_to_optimal_prior(mu, [self.log_sigma[self.key(k)] for k in names])
        return kl / self.num_examples

    def metrics(self) -> dict:
        """The mean posterior std over all weights (it starts at ``init_std``)."""
        with torch.no_grad():
            total = sum(s.exp().sum() for s in self.log_sigma.values())
            return {"awn_sigma_mean": float(total) / sum(s.numel() for s in self.log_sigma.values())}

    def extra_repr(self) -> str:
        return f"num_examples={self.num_examples}"


#: kind -> factory(model, std, num_examples)
REGULARIZERS = {
    "none": lambda model, std, num_examples: NoRegularizer(),
    "weight_noise": lambda model, std, num_examples: FixedWeightNoise(std),
    "adaptive_weight_noise": lambda model, std, num_examples: AdaptiveWeightNoise(
        model, init_std=std, num_examples=num_examples),
}


def build_regularizer(kind: str, model: nn.Module, std: float = 0.075,
                      num_examples: int = 1) -> Regularizer:
    """Build "none", "weight_noise" (fixed std) or "adaptive_weight_noise" (initial std ``std``).

    Following the paper, train in that order and initialise each net from the previous one.
    """
    if kind not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {kind!r}; valid kinds: {', '.join(REGULARIZERS)}")
    return REGULARIZERS[kind](model, std, num_examples)
