"""The soft attention window of handwriting synthesis (Graves sec. 5, eqs. 46-51) and its stop rule.

K Gaussians over character positions u = 1..U, 1-based as in the paper: with kappa = 1 the window
is centred on the first character c_1. The window parameters p = W_{h1,p} h^1_t + b_p (eq. 48)
are laid out as [ alphahat (K) | betahat (K) | kappahat (K) ].
"""

from __future__ import annotations

import torch
from torch import Tensor


def window_params(p: Tensor, kappa_prev: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """p (B, 3K), kappa_{t-1} (B, K) -> alpha, beta, kappa, each (B, K)   (eqs. 49-51)."""
    alphahat, betahat, kappahat = p.chunk(3, -1)
    return alphahat.exp(), betahat.exp(), kappa_prev + kappahat.exp()  # eqs. 49, 50, 51


def window_phi(alpha: Tensor, beta: Tensor, kappa: Tensor, U: int) -> Tensor:
    """phi(t, u) = sum_k alpha^k exp(-beta^k (kappa^k - u)^2) for u = 1..U (eq. 46): (B, K) x 3 -> (B, U)."""
    u = torch.arange(1, U + 1, dtype=kappa.dtype, device=kappa.device)  # 1-based positions
    return (alpha.unsqueeze(-1) * torch.exp(-beta.unsqueeze(-1) * (kappa.unsqueeze(-1) - u).square())).sum(-2)


def soft_window(
    p: Tensor, kappa_prev: Tensor, chars_onehot: Tensor, char_mask: Tensor | None = None, dummy: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """One step of the window: w_t = sum_u phi(t, u) c_u   (eqs. 46-51).

    Args:
        p: (B, 3K) raw window outputs (eq. 48); kappa_prev: (B, K) kappa_{t-1} (zeros at t = 1).
        chars_onehot: (B, U, C) one-hot text c, padded; char_mask: (B, U), 1/True on real characters.
        dummy: also return phi at u = U + 1, the dummy position of the stop rule.
    Returns:
        w (B, C) window vector; kappa (B, K); phi (B, U), or (B, U + 1) with ``dummy``. phi is
        eq. 46 itself, *not* masked (it does not depend on the text): for a padded sequence of
        length U_b, columns beyond U_b (+1) are meaningless except as `should_stop` uses them. The
        mask (and the zero one-hot of padding) keeps them out of w.
    """
    U = chars_onehot.shape[1]
    alpha, beta, kappa = window_params(p, kappa_prev)
    phi = window_phi(alpha, beta, kappa, U + int(dummy))
    weights = phi[:, :U] if char_mask is None else phi[:, :U] * char_mask.to(phi.dtype)
    w = torch.bmm(weights.unsqueeze(1), chars_onehot.to(phi.dtype)).squeeze(1)  # eq. 47
    return w, kappa, phi


def should_stop(phi_with_dummy: Tensor, lengths: Tensor | None = None) -> Tensor:
    """The sampling stop rule (sec. 5): phi(t, U+1) > phi(t, u) for all 1 <= u <= U.

    phi_with_dummy: (B, U_max + 1) phi at u = 1..U_max+1 (e.g. from ``soft_window(..., dummy=True)``);
    lengths: (B,) text lengths U_b <= U_max (default U_max for all); sequence b compares column
    U_b (0-based, i.e. u = U_b + 1) with columns 0..U_b - 1. Returns a bool tensor (B,).
    """
    B, n = phi_with_dummy.shape
    if lengths is None:
        lengths = torch.full((B,), n - 1, dtype=torch.long, device=phi_with_dummy.device)
    lengths = lengths.to(device=phi_with_dummy.device, dtype=torch.long)
    phi_end = phi_with_dummy.gather(1, lengths.unsqueeze(1)).squeeze(1)
    text = torch.arange(n, device=phi_with_dummy.device) < lengths.unsqueeze(1)  # u = 1..U_b
    best_char = phi_with_dummy.masked_fill(~text, float("-inf")).amax(1)
    return phi_end > best_char
