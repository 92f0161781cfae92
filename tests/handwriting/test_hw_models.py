"""Handwriting prediction / synthesis networks (secs. 4-5): step protocol, the w delays of eqs. 52-53, gradcheck."""

import pytest
import torch
import torch.nn.functional as F

from seqgen.config import ExperimentConfig, ModelConfig
from seqgen.handwriting.iam import graves57_alphabet
from seqgen.handwriting.mdn import output_size
from seqgen.handwriting.models import HandwritingModel, HandwritingState, build_handwriting_model
from seqgen.handwriting.window import soft_window

C = 7  # tiny alphabet: 0 = pad, 1..6 characters


def tiny(alphabet_size=C, num_layers=3, peephole=False, skip=True, dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig(kind="handwriting_synthesis", hidden_size=6, num_layers=num_layers, peephole=peephole,
                      skip=skip, mixture_components=3, window_components=2, **kw)
    return HandwritingModel(cfg, alphabet_size).to(dtype).eval()


def batch(B=2, T=6, U=4, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, 3, generator=g, dtype=dtype)
    x[..., 2] = (x[..., 2] > 1).to(dtype)
    chars = torch.randint(1, C, (B, U), generator=g)
    chars[1, U - 1 :] = 0  # row 1 is one character shorter (padding)
    return x, chars


@pytest.mark.parametrize("synthesis", [False, True])
@pytest.mark.parametrize("peephole,skip", [(False, True), (True, True), (False, False)])
def test_full_sequence_equals_step_by_step(synthesis, peephole, skip):
    model = tiny(C if synthesis else 0, peephole=peephole, skip=skip)
    x, chars = batch()
    chars = chars if synthesis else None
    yhat, state, phi = model(x, model.initial_state(2), chars, return_phi=True)
    assert yhat.shape == (2, 6, output_size(3))
    steps, s = [], model.initial_state(2)
    for t in range(x.shape[1]):
        out = model(x[:, t : t + 1], s, chars, return_phi=True)
        steps.append(out)
        s = out[1]
    torch.testing.assert_close(torch.cat([o[0] for o in steps], 1), yhat)
    torch.testing.assert_close(s, state)
    if synthesis:
        assert phi.shape == (2, 6, chars.shape[1] + 1)  # includes the dummy u = U + 1
        torch.testing.assert_close(torch.cat([o[2] for o in steps], 1), phi)
    else:
        assert phi is None and state.kappa.shape == (2, 0)


def test_matches_naive_equations_52_53():
    """An independent per-step evaluation of eqs. 46-53 from the model's own parameters."""
    model = tiny()
    x, chars = batch()
    B, T, _ = x.shape
    onehot, mask = F.one_hot(chars, C).double(), chars != 0
    hs = [layer.initial_state(B, dtype=torch.float64) for layer in model.rnn.layers]
    kappa, w = torch.zeros(B, model.K, dtype=torch.float64), torch.zeros(B, C, dtype=torch.float64)
    out = []
    for t in range(T):
        xt = x[:, t : t + 1]
        h1, hs[0] = model.rnn.layers[0](torch.cat([xt, w[:, None]], -1), hs[0])  # eq. 52: w_{t-1}
        w, kappa, _ = soft_window(model.window(h1[:, 0]), kappa, onehot, mask)  # now w_t
        below, all_h = h1, [h1]
        for n in (1, 2):
            below, hs[n] = model.rnn.layers[n](torch.cat([xt, below, w[:, None]], -1), hs[n])  # eq. 53: w_t
            all_h.append(below)
        out.append(model.head(torch.cat(all_h, -1)))  # eq. 17: every layer, not w
    torch.testing.assert_close(model(x, model.initial_state(B), chars)[0], torch.cat(out, 1))


def test_window_delay_layer1_reads_previous_w():
    """One layer: yhat_1 cannot depend on the text (w_0 = 0), yhat_2 must (through w_1).
    Two layers: layer 2 reads w_t, so already yhat_1 depends on the text."""
    x, chars = batch(T=3)
    other = chars.flip(1).clamp_min(1)
    one = tiny(num_layers=1)
    a, b = one(x, one.initial_state(2), chars)[0], one(x, one.initial_state(2), other)[0]
    torch.testing.assert_close(a[:, 0], b[:, 0])
    assert (a[:, 1] - b[:, 1]).abs().max() > 1e-6
    two = tiny(num_layers=2)
    a, b = two(x, two.initial_state(2), chars)[0], two(x, two.initial_state(2), other)[0]
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-6


def test_gradcheck_synthesis_forward():
    model = tiny(num_layers=2, peephole=True)
    x, chars = batch(B=2, T=3, U=3)
    x.requires_grad_(True)

    def f(x):
        yhat, state, phi = model(x, model.initial_state(2), chars, return_phi=True)
        return yhat, state.kappa, phi

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-5)


def test_prediction_model_is_char_free_and_state_shapes():
    model = tiny(0)
    s = model.initial_state(4)
    assert isinstance(s, HandwritingState) and len(s.layers) == 3 and s.w.shape == (4, 0)
    yhat, s2 = model(torch.zeros(4, 5, 3, dtype=torch.float64), s)
    assert yhat.shape == (4, 5, output_size(3)) and s2.layers[0][0].shape == (4, 6)


def test_synthesis_needs_chars_and_lstm():
    with pytest.raises(ValueError, match="chars"):
        tiny()(torch.zeros(1, 2, 3, dtype=torch.float64), tiny().initial_state(1))
    with pytest.raises(ValueError, match="LSTM"):
        HandwritingModel(ModelConfig(cell="gru"))


def test_build_from_config_and_meta():
    alphabet = graves57_alphabet()
    cfg = ExperimentConfig(model=ModelConfig(kind="handwriting_synthesis", hidden_size=8, num_layers=2,
                                             output_clip=100.0))
    meta = {"alphabet": alphabet.to_json(), "offset_mean": [0.0, 0.0], "offset_std": [1.0, 1.0]}
    model = build_handwriting_model(cfg, meta)
    assert model.synthesis and model.C == len(alphabet) == 58 and model.window.out_features == 30
    cfg.model.kind = "handwriting_prediction"
    assert not build_handwriting_model(cfg, {"alphabet": None}).synthesis
    cfg.model.kind = "handwriting_synthesis"
    with pytest.raises(ValueError, match="alphabet"):
        build_handwriting_model(cfg, {"alphabet": None})


def test_window_starts_at_the_datas_pace():
    """meta["points_per_char"] = 20 -> the first step moves every kappa by 1/20 of a character (eq. 51)."""
    cfg = ExperimentConfig(model=ModelConfig(kind="handwriting_synthesis", hidden_size=8, num_layers=1))
    meta = {"alphabet": graves57_alphabet().to_json(), "points_per_char": 20.0}
    model = build_handwriting_model(cfg, meta)
    with torch.no_grad():
        model.window.weight.zero_()  # isolate the bias: kappahat = b_kappa
        s = model.initial_state(2)
        _, s = model(torch.zeros(2, 1, 3), s, torch.ones(2, 5, dtype=torch.long))
    torch.testing.assert_close(s.kappa, torch.full((2, model.K), 0.05))
    default = build_handwriting_model(cfg, {"alphabet": meta["alphabet"]})  # no pace known: the paper's bias 0 init
    assert default.window.bias[2 * default.K :].abs().max() < 1
