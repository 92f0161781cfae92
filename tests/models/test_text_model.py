"""TextModel: one-hot / embedding inputs, the head over all layers, and the step protocol."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqgen.config import ModelConfig
from seqgen.models.text import TextModel

V = 11


def _model(**kw) -> TextModel:
    torch.manual_seed(0)
    cfg = ModelConfig(**{"hidden_size": 8, "num_layers": 2, **kw})
    return TextModel(cfg, V).eval()


def test_one_hot_input_shapes():
    m = _model(embedding_dim=0)
    assert m.embedding is None
    assert m.rnn.layers[0].weight_ih.shape == (32, V)  # 4 gates x 8 cells, reading V one-hot inputs
    tokens = torch.randint(V, (3, 5))
    x = m.embed(tokens)
    assert x.shape == (3, 5, V) and x.dtype == m.head.weight.dtype
    torch.testing.assert_close(x, F.one_hot(tokens, V).float())
    logits, state = m(tokens, m.initial_state(3))
    assert logits.shape == (3, 5, V)
    assert len(state) == 2 and all(s.shape == (3, 8) for layer in state for s in layer)


def test_embedding_input_shapes():
    m = _model(embedding_dim=6)
    assert m.embedding.weight.shape == (V, 6)
    assert m.rnn.layers[0].weight_ih.shape == (32, 6)
    assert m.rnn.layers[1].weight_ih.shape == (32, 6 + 8)  # skip: the input reaches layer 2 too
    tokens = torch.randint(V, (2, 4))
    assert m.embed(tokens).shape == (2, 4, 6)
    logits, _ = m(tokens, m.initial_state(2))
    assert logits.shape == (2, 4, V)


@pytest.mark.parametrize("skip,head_in", [(True, 3 * 8), (False, 8)])
def test_head_reads_every_layer_with_skip(skip, head_in):
    m = _model(num_layers=3, skip=skip)
    assert m.head.weight.shape == (V, head_in)  # eq. 3: b_y + sum_n W_{hn,y} h^n_t


@pytest.mark.parametrize(
    "kw",
    [
        {},  # fused LSTM, skip
        {"skip": False},
        {"peephole": True, "deriv_clip": 1.0},  # LSTM time loop
        {"cell": "gru", "embedding_dim": 5},
        {"cell": "rnn", "num_layers": 1},
        {"cell": "scrn", "context_size": 3, "alpha": 0.9},
    ],
)
def test_step_by_step_equals_full_sequence(kw):
    m = _model(**kw).double()
    tokens = torch.randint(V, (2, 9))
    with torch.no_grad():
        full, full_state = m(tokens, m.initial_state(2))
        state, steps = m.initial_state(2), []
        for t in range(tokens.shape[1]):
            logits, state = m(tokens[:, t : t + 1], state)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-10, atol=1e-10)
    for a, b in zip(torch.utils._pytree.tree_leaves(state), torch.utils._pytree.tree_leaves(full_state)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_initial_state_follows_dtype():
    m = _model().double()
    assert all(s.dtype == torch.float64 for layer in m.initial_state(1) for s in layer)
