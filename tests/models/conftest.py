"""Shared by the model tests."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call


@pytest.fixture
def gradcheck_lstm_layer():
    """``check(layer, input_size)``: torch.autograd.gradcheck of a float64 LSTM layer w.r.t. its input
    (2 x 3 x input_size), initial state (h0, c0) and every parameter, drawn in that order."""

    def check(layer, input_size: int) -> bool:
        names = [n for n, _ in layer.named_parameters()]

        def f(x, h0, c0, *params):
            y, (h, c) = functional_call(layer, dict(zip(names, params)), (x, (h0, c0)))
            return y, h, c

        leaf = lambda *shape: torch.randn(*shape, dtype=torch.float64, requires_grad=True)  # noqa: E731
        H = layer.hidden_size
        x, h0, c0 = leaf(2, 3, input_size), leaf(2, H), leaf(2, H)
        params = [p.detach().clone().requires_grad_(True) for p in layer.parameters()]
        return torch.autograd.gradcheck(f, (x, h0, c0, *params))

    return check
