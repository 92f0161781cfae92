"""Soft attention window (eqs. 46-51) against a naive loop, gradcheck, and the stop rule."""

import math

import torch

from seqgen.handwriting.window import should_stop, soft_window


def naive_window(p, kappa_prev, chars_onehot, char_mask):
    """Per-sequence, per-character, per-Gaussian Python loop over eqs. 46-51 (u is 1-based)."""
    B, U, C = chars_onehot.shape
    K = p.shape[1] // 3
    w = torch.zeros(B, C, dtype=p.dtype)
    kappa = torch.zeros(B, K, dtype=p.dtype)
    phi = torch.zeros(B, U, dtype=p.dtype)
    for b in range(B):
        for k in range(K):
            kappa[b, k] = kappa_prev[b, k] + math.exp(p[b, 2 * K + k])
        for u in range(1, U + 1):
            for k in range(K):
                alpha, beta = math.exp(p[b, k]), math.exp(p[b, K + k])
                phi[b, u - 1] += alpha * math.exp(-beta * (kappa[b, k] - u) ** 2)
            if char_mask[b, u - 1]:
                w[b] += phi[b, u - 1] * chars_onehot[b, u - 1]
    return w, kappa, phi


def random_batch(B=3, U=7, C=6, K=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([U, U - 3, 1][:B])
    char_mask = torch.arange(U) < lengths[:, None]
    ids = torch.randint(1, C, (B, U), generator=g) * char_mask
    onehot = torch.nn.functional.one_hot(ids, C).to(dtype) * char_mask[..., None]
    p = torch.randn(B, 3 * K, generator=g, dtype=dtype)
    return p, onehot, char_mask, lengths


def test_batched_window_matches_naive_loop_over_steps():
    p0, onehot, mask, _ = random_batch()
    g = torch.Generator().manual_seed(1)
    kappa = kappa_ref = torch.zeros(3, 4, dtype=torch.float64)
    for t in range(5):  # carry kappa across steps: it only moves forward (eq. 51)
        p = p0 + 0.3 * torch.randn(p0.shape, generator=g, dtype=p0.dtype)
        w, kappa_new, phi = soft_window(p, kappa, onehot, mask)
        w_ref, kappa_ref, phi_ref = naive_window(p, kappa_ref, onehot, mask)
        torch.testing.assert_close(w, w_ref)
        torch.testing.assert_close(kappa_new, kappa_ref)
        torch.testing.assert_close(phi, phi_ref)
        assert (kappa_new > kappa).all()
        kappa = kappa_new


def test_dummy_column_and_mask():
    p, onehot, mask, _ = random_batch()
    w, kappa, phi = soft_window(p, torch.zeros(3, 4, dtype=p.dtype), onehot, mask)
    w2, kappa2, phi2 = soft_window(p, torch.zeros(3, 4, dtype=p.dtype), onehot, mask, dummy=True)
    assert phi2.shape == (3, 8)
    torch.testing.assert_close(phi2[:, :7], phi)
    torch.testing.assert_close(w2, w)
    # padding never reaches w, even with a non-zero one-hot in the padded slots
    w3, _, _ = soft_window(p, torch.zeros(3, 4, dtype=p.dtype), onehot + (~mask)[..., None].to(p.dtype), mask)
    torch.testing.assert_close(w3, w)


def test_window_gradcheck_float64():
    p, onehot, mask, _ = random_batch(U=5, K=3)
    p = (0.5 * p).requires_grad_()
    kappa_prev = torch.rand(3, 3, dtype=torch.float64).mul(4).requires_grad_()
    assert torch.autograd.gradcheck(lambda p, k: soft_window(p, k, onehot, mask, dummy=True), (p, kappa_prev))


def test_should_stop_on_hand_built_phi():
    # columns are u = 1..4 plus the dummy u = U_b + 1 of each sequence
    phi = torch.tensor(
        [
            [0.1, 0.2, 0.3, 0.4, 0.5],  # U=4: dummy (col 4) 0.5 > max 0.4 -> stop
            [0.1, 0.2, 0.6, 0.5, 0.0],  # U=4: dummy 0.0 < 0.6 -> go on
            [0.1, 0.3, 0.9, 0.0, 0.0],  # U=2: dummy is col 2 (0.9) > 0.1, 0.3 -> stop; cols 3-4 ignored
            [0.5, 0.3, 0.4, 0.0, 0.9],  # U=2: dummy 0.4 < 0.5 -> go on; col 4 is not its dummy
            [0.4, 0.4, 0.4, 0.4, 0.4],  # U=4: a tie is not "greater" -> go on
        ]
    )
    lengths = torch.tensor([4, 4, 2, 2, 4])
    assert should_stop(phi, lengths).tolist() == [True, False, True, False, False]
    assert should_stop(phi[:2]).tolist() == [True, False]  # lengths default to U_max


def test_stop_rule_fires_once_the_window_passes_the_text():
    U, K = 5, 1
    onehot = torch.eye(6)[torch.arange(1, U + 1)].unsqueeze(0)
    kappa = torch.zeros(1, K)
    p = torch.tensor([[0.0, math.log(2.0), math.log(0.5)]])  # alpha 1, beta 2, kappa += 0.5 per step
    stops = []
    for t in range(16):
        _, kappa, phi = soft_window(p, kappa, onehot, dummy=True)
        stops.append(bool(should_stop(phi, torch.tensor([U]))))
    first = stops.index(True)
    assert kappa.item() == 8.0 and first == 11 and all(stops[first:])  # kappa = 0.5 (t + 1): 5.5 ties u = 5, 6
