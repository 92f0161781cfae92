"""A wider network started as a narrower one (`seqgen.models.widen`, Net2WiderNet) computes the same
function in float64, for the handwriting networks and the text models' cells, and its copies of a
unit get different gradients, so training can pull them apart."""

from __future__ import annotations

import pytest
import torch

from seqgen.config import ModelConfig
from seqgen.handwriting.models import HandwritingModel
from seqgen.models.text import TextModel
from seqgen.models.widen import initial_weights, widen_state
from tests.handwriting.test_hw_models import C, batch


def _handwriting(hidden: int, synthesis=True, **kw) -> HandwritingModel:
    cfg = ModelConfig(kind="handwriting_synthesis", hidden_size=hidden, num_layers=3, mixture_components=3,
                      window_components=2, **kw)
    return HandwritingModel(cfg, C if synthesis else 0).double().eval()


def _text(hidden: int, **kw) -> TextModel:
    return TextModel(ModelConfig(hidden_size=hidden, num_layers=2, **kw), 11).double().eval()


def _widened(narrow, wide, hidden):
    torch.manual_seed(1)
    for p in narrow.parameters():  # trained-looking weights, not the initialiser's
        p.data = torch.randn_like(p) * 0.5
    wide.load_state_dict(widen_state(narrow.state_dict(), wide, hidden, seed=3))
    return narrow, wide


@pytest.mark.parametrize("synthesis", [True, False])
@pytest.mark.parametrize("peephole,skip", [(False, True), (True, True), (True, False)])
@pytest.mark.parametrize("factor", [2, 3])
def test_a_widened_handwriting_network_computes_the_same(synthesis, peephole, skip, factor):
    narrow, wide = _widened(_handwriting(4, synthesis, peephole=peephole, skip=skip),
                            _handwriting(4 * factor, synthesis, peephole=peephole, skip=skip), 4)
    x, chars = batch(T=12)
    chars = chars if synthesis else None
    a = narrow(x, narrow.initial_state(2), chars, return_phi=True)
    b = wide(x, wide.initial_state(2), chars, return_phi=True)
    torch.testing.assert_close(b[0], a[0], rtol=1e-10, atol=1e-10)  # the mixture outputs (eq. 17)
    if synthesis:
        torch.testing.assert_close(b[2], a[2], rtol=1e-10, atol=1e-10)  # the window (eq. 46)
    h_narrow, h_wide = a[1].layers[0][0], b[1].layers[0][0]
    for c in range(factor):  # every copy of a unit has its activation
        torch.testing.assert_close(h_wide[:, c * 4 : (c + 1) * 4], h_narrow, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("skip", [True, False])
def test_a_widened_text_model_computes_the_same(cell, skip):
    narrow, wide = _widened(_text(5, cell=cell, skip=skip), _text(10, cell=cell, skip=skip), 5)
    tokens = torch.randint(0, 11, (3, 9), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(wide(tokens, wide.initial_state(3))[0], narrow(tokens, narrow.initial_state(3))[0],
                               rtol=1e-10, atol=1e-10)


def test_the_copies_of_a_unit_get_different_gradients():
    _, wide = _widened(_handwriting(4), _handwriting(8), 4)
    x, chars = batch(T=12)
    wide(x, wide.initial_state(2), chars)[0].square().sum().backward()
    rows = wide.rnn.layers[1].weight_ih.grad.view(4, 2, 4, -1)  # (gate, copy, unit, inputs)
    assert not torch.allclose(rows[:, 0], rows[:, 1])
    # without the noise they would stay copies: equal gradients
    narrow, plain = _handwriting(4), _handwriting(8)
    import seqgen.models.widen as widen

    widen_noise, widen.NOISE = widen.NOISE, 0.0
    try:
        _widened(narrow, plain, 4)
    finally:
        widen.NOISE = widen_noise
    plain(x, plain.initial_state(2), chars)[0].square().sum().backward()
    rows = plain.rnn.layers[1].weight_ih.grad.view(4, 2, 4, -1)
    torch.testing.assert_close(rows[:, 0], rows[:, 1])


def test_what_cannot_be_widened_is_named():
    with pytest.raises(ValueError, match="multiple"):
        widen_state(_text(4).state_dict(), _text(6), 4)
    with pytest.raises(ValueError, match="SCRN"):
        widen_state(_text(4, cell="scrn").state_dict(), _text(8, cell="scrn"), 4)


def test_init_from_keeps_a_checkpoint_of_the_same_width_as_it_is():
    class Source:  # the fields of a LoadedCheckpoint initial_weights reads
        config = type("C", (), {"model": ModelConfig(hidden_size=5, num_layers=2)})
        model_state = _text(5).state_dict()

    assert initial_weights(_text(5), Source) is Source.model_state
    assert initial_weights(_text(10), Source)["head.weight"].shape == (11, 20)
