"""Tests for seqgen.train.regularizers: fixed and adaptive weight noise through functional_call."""

import copy
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from seqgen.train.regularizers import (
    AdaptiveWeightNoise, FixedWeightNoise, NoRegularizer, build_regularizer, kl_to_optimal_prior,
)


class TinyLSTMNet(nn.Module):
    """nn.LSTM + linear read-out: the shape of the text models."""

    def __init__(self, k=5, hidden=8, layers=2):
        super().__init__()
        self.lstm = nn.LSTM(k, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, k)

    def forward(self, x):
        return self.out(self.lstm(x)[0])


def loss_fn(model, params, x):
    return functional_call(model, params, (x,)).pow(2).mean()


@pytest.fixture
def net():
    torch.manual_seed(0)
    return TinyLSTMNet()


@pytest.fixture
def x():
    return torch.randn(3, 6, 5)


def test_no_regularizer(net, x):
    reg = NoRegularizer()
    params = reg.sample(net)
    assert all(params[k] is p for k, p in net.named_parameters())
    torch.testing.assert_close(reg(net, x), net(x))
    assert reg.penalty(net).item() == 0.0


def test_fixed_noise_resampled_each_call_with_the_right_std(net):
    reg = FixedWeightNoise(0.075)
    s1, s2 = reg.sample(net), reg.sample(net)
    assert set(s1) == {k for k, _ in net.named_parameters()}  # every weight, biases included
    for k, w in net.named_parameters():
        assert not torch.equal(s1[k], s2[k]) and not torch.equal(s1[k], w)
    noise = torch.cat([(s1[k] - w).detach().flatten() for k, w in net.named_parameters()])
    assert noise.numel() > 1000
    assert abs(noise.std().item() - 0.075) < 0.075 * 0.1
    assert abs(noise.mean().item()) < 0.075 * 0.15


def test_fixed_noise_gradient_is_the_gradient_at_the_noisy_weights(net, x):
    torch.manual_seed(1)
    params = FixedWeightNoise(0.075).sample(net)
    assert all(p.grad_fn is not None for p in params.values())  # expressions, not copies
    loss_fn(net, params, x).backward()
    noisy = copy.deepcopy(net)
    noisy.load_state_dict({k: p.detach() for k, p in params.items()})
    noisy(x).pow(2).mean().backward()
    for (k, w), (_, v) in zip(net.named_parameters(), noisy.named_parameters()):
        assert w.grad is not None and w.grad.abs().sum() > 0, k
        torch.testing.assert_close(w.grad, v.grad)


def test_functional_call_lstm_uses_the_substituted_weights(net, x):
    clean = net(x).detach()
    params = FixedWeightNoise(0.3).sample(net)
    lstm_only = {k: p if k.startswith("lstm.") else net.get_parameter(k) for k, p in params.items()}
    y = functional_call(net, lstm_only, (x,))
    assert (y - clean).abs().max() > 1e-3  # the LSTM really ran on the noisy weights
    noisy = copy.deepcopy(net)
    noisy.load_state_dict({k: p.detach() for k, p in lstm_only.items()})
    torch.testing.assert_close(y, noisy(x))
    torch.testing.assert_close(net(x), clean)  # and the clean weights are back afterwards
    with torch.no_grad():  # an in-place optimiser update is still seen by the next forward
        net.lstm.weight_hh_l0.add_(0.5)
    assert (net(x) - clean).abs().max() > 1e-3


def naive_kl(mus, sigmas):
    """Gaussian KL(N(m, s^2) || N(mu_p, sigma_p^2)) weight by weight, prior at its optimum."""
    m = [v for t in mus for v in t.detach().flatten().tolist()]
    s = [v for t in sigmas for v in t.detach().flatten().tolist()]
    mu_p = sum(m) / len(m)
    var_p = sum(si ** 2 + (mi - mu_p) ** 2 for mi, si in zip(m, s)) / len(m)
    return sum(0.5 * math.log(var_p / si ** 2) + (si ** 2 + (mi - mu_p) ** 2) / (2 * var_p) - 0.5
               for mi, si in zip(m, s))


def test_adaptive_penalty_matches_naive_kl(net):
    reg = AdaptiveWeightNoise(net, init_std=0.075, num_examples=250)
    with torch.no_grad():
        for s in reg.log_sigma.values():
            s.add_(0.3 * torch.randn_like(s))
    names = [k for k, _ in net.named_parameters()]
    assert set(reg.log_sigma) == {k.replace(".", "__") for k in names}
    expected = naive_kl([p for p in net.parameters()], [reg.sigma(k) for k in names]) / 250
    assert reg.penalty(net).item() == pytest.approx(expected, rel=1e-4)
    # and against torch.distributions with the prior held at its optimum
    mu = torch.cat([p.detach().flatten() for p in net.parameters()]).double()
    sd = torch.cat([reg.sigma(k).detach().flatten() for k in names]).double()
    prior_sd = (sd ** 2 + (mu - mu.mean()) ** 2).mean().sqrt()
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(mu, sd),
                                           torch.distributions.Normal(mu.mean(), prior_sd)).sum()
    assert reg.penalty(net).item() == pytest.approx(kl.item() / 250, rel=1e-4)


def test_kl_gradcheck_float64():
    torch.manual_seed(2)
    mu = [torch.randn(3, 2, dtype=torch.float64, requires_grad=True),
          torch.randn(4, dtype=torch.float64, requires_grad=True)]
    log_sigma = [(0.3 * torch.randn(3, 2, dtype=torch.float64) - 2).requires_grad_(),
                 (0.3 * torch.randn(4, dtype=torch.float64) - 2).requires_grad_()]
    assert torch.autograd.gradcheck(lambda a, b, c, d: kl_to_optimal_prior([a, b], [c, d]),
                                    (*mu, *log_sigma))
    assert torch.autograd.gradgradcheck(lambda a, b, c, d: kl_to_optimal_prior([a, b], [c, d]),
                                        (*mu, *log_sigma))


class PenaltyOf(nn.Module):
    """Wraps reg.penalty(model) as a forward() so functional_call can swap mu and log sigma."""

    def __init__(self, model, reg):
        super().__init__()
        self.model, self.reg = model, reg

    def forward(self):
        return self.reg.penalty(self.model)


def test_adaptive_penalty_gradcheck_wrt_mu_and_log_sigma():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 2)).double()
    wrapper = PenaltyOf(model, AdaptiveWeightNoise(model, init_std=0.1, num_examples=7))
    names, values = zip(*wrapper.named_parameters())  # model.* (mu) and reg.log_sigma.*
    assert sum(k.startswith("reg.log_sigma.") for k in names) == len(names) // 2

    def penalty(*tensors):
        return functional_call(wrapper, dict(zip(names, tensors)), ())

    inputs = tuple(v.detach() + 0.1 * torch.randn_like(v) for v in values)
    assert torch.autograd.gradcheck(penalty, tuple(t.requires_grad_() for t in inputs))


def test_adaptive_sigma_receives_gradients_from_the_loss(net, x):
    reg = AdaptiveWeightNoise(net, init_std=0.075, num_examples=100)
    loss_fn(net, reg.sample(net), x).backward()
    for k, s in reg.log_sigma.items():
        assert s.grad is not None and s.grad.abs().sum() > 0, k
    assert all(p.grad is not None for p in net.parameters())
    reg.zero_grad()
    reg.penalty(net).backward()  # the KL pushes every sigma too
    assert all(s.grad.abs().sum() > 0 for s in reg.log_sigma.values())


def test_adaptive_sample_std_and_trainable_by_the_same_optimizer(net, x):
    reg = AdaptiveWeightNoise(net, init_std=0.2)
    s = reg.sample(net)
    noise = torch.cat([(s[k] - w).detach().flatten() for k, w in net.named_parameters()])
    assert abs(noise.std().item() - 0.2) < 0.02
    opt = torch.optim.SGD([*net.parameters(), *reg.parameters()], lr=0.1)
    before = reg.log_sigma["lstm__weight_hh_l0"].detach().clone()
    (loss_fn(net, reg.sample(net), x) + reg.penalty(net)).backward()
    opt.step()
    assert not torch.equal(before, reg.log_sigma["lstm__weight_hh_l0"])


def test_adaptive_state_dict_round_trip(net):
    reg = AdaptiveWeightNoise(net, init_std=0.075, num_examples=10)
    with torch.no_grad():
        for s in reg.log_sigma.values():
            s.uniform_(-4, -1)
    state = reg.state_dict()
    assert set(state) == {f"log_sigma.{k.replace('.', '__')}" for k, _ in net.named_parameters()}
    other = AdaptiveWeightNoise(net, init_std=0.5, num_examples=10)
    other.load_state_dict(state)
    for k in reg.log_sigma:
        torch.testing.assert_close(other.log_sigma[k], reg.log_sigma[k])
    torch.testing.assert_close(other.penalty(net), reg.penalty(net))


def test_build_regularizer(net):
    assert isinstance(build_regularizer("none", net, 0.075, 10), NoRegularizer)
    fixed = build_regularizer("weight_noise", net, 0.05, 10)
    assert isinstance(fixed, FixedWeightNoise) and fixed.std == 0.05
    ada = build_regularizer("adaptive_weight_noise", net, 0.05, 10)
    assert isinstance(ada, AdaptiveWeightNoise) and ada.num_examples == 10
    torch.testing.assert_close(ada.sigma("out.weight"), torch.full((5, 8), 0.05))
    with pytest.raises(ValueError, match="none.*weight_noise.*adaptive_weight_noise"):
        build_regularizer("dropout", net, 0.1, 10)


# -- the KL weight follows the loss's unit; sigmas inside DDP and the global-norm clip ----------

TEXT = ["model.hidden_size=8", "model.num_layers=1", "train.batch_size=4", "train.progress=false",
        "reg.kind=adaptive_weight_noise", "reg.std=0.05"]


@pytest.fixture(scope="module")
def shakespeare(tmp_path_factory):
    from seqgen.data.presets import text_preset
    from seqgen.data.text import preprocess_text
    from seqgen.storage import Storage

    storage = Storage.from_url(str(tmp_path_factory.mktemp("awn") / "store"))
    manifest = preprocess_text(storage, "shakespeare", text_preset("shakespeare"), use_ray=False)
    return storage, manifest


@pytest.mark.parametrize("seq_len", [20, 50])
@pytest.mark.parametrize("world", [1, 2])
def test_text_kl_weight_is_one_over_the_training_tokens(shakespeare, seq_len, world):
    """Loss = mean nats per token, so the KL is divided by the corpus' training tokens (all
    workers), whatever the window length and worker count: the same weight in all four cases."""
    from seqgen.config import load
    from seqgen.train.text_task import TextTask

    storage, manifest = shakespeare
    tokens = manifest["splits"]["train"]["tokens"]
    assert tokens > 900_000  # Tiny Shakespeare's 90%
    cfg = load(None, [*TEXT, f"train.seq_len={seq_len}"])
    for rank in range(world):
        task = TextTask(cfg, storage, rank, world)
        torch.manual_seed(0)
        model = task.build_model()
        reg = build_regularizer("adaptive_weight_noise", model, 0.05, task.num_train_examples)
        names, mu = zip(*model.named_parameters())
        kl = kl_to_optimal_prior(mu, [reg.log_sigma[reg.key(k)] for k in names])
        assert reg.penalty(model).item() == pytest.approx(kl.item() / tokens, rel=1e-6)
        # the old divisor (windows on this worker) would have been ~seq_len * world times smaller
        windows = task.streams.shape[0] * task.num_windows
        assert tokens / windows == pytest.approx(seq_len * world, rel=0.01)


def test_regularized_module_routes_gradients_to_weights_and_sigmas(net, x):
    from seqgen.train.regularizers import Regularized

    reg = AdaptiveWeightNoise(net, init_std=0.075, num_examples=100)
    wrapped = Regularized(net, reg)
    assert {k for k, _ in wrapped.named_parameters()} == \
        {f"model.{k}" for k, _ in net.named_parameters()} | {f"reg.log_sigma.{k}" for k in reg.log_sigma}
    torch.manual_seed(4)
    y = wrapped(x)
    torch.manual_seed(4)
    torch.testing.assert_close(y, reg(net, x))  # the same sample, the same output
    y.pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in wrapped.parameters())
    assert reg.metrics()["awn_sigma_mean"] == pytest.approx(0.075)
    assert NoRegularizer().metrics() == {} and FixedWeightNoise(0.1).metrics() == {}


def test_global_norm_clip_includes_the_sigmas(shakespeare, ray_session):
    """One plain-SGD step (lr 1) of the real loop with a tiny clip: the whole update -- weights and
    log sigmas together -- has exactly the clip's norm. Clipping only the weights would make the
    weights' part alone that long and the whole update longer."""
    from seqgen.checkpoint import list_checkpoints, load as load_checkpoint
    from seqgen.config import load
    from seqgen.train.run import make_trainer
    from seqgen.train.text_task import TextTask

    storage, _ = shakespeare
    clip = 1e-3
    cfg = load(None, [*TEXT, "run_name=clip", "train.seq_len=20", "train.max_steps=1", "train.eval_every=1",
                      "train.eval_tokens=500", "optim.name=sgd", "optim.momentum=0", "optim.lr=1",
                      f"optim.grad_norm_clip={clip}"])
    make_trainer(cfg, storage).fit()  # local mode: in this process
    torch.manual_seed(cfg.train.seed)  # the loop's initial weights
    initial = TextTask(cfg, storage).build_model().state_dict()
    loaded = load_checkpoint(list_checkpoints(storage.url_of(storage.run_dir("clip")))[-1], with_trainer=True)
    dw = torch.cat([(loaded.model_state[k] - initial[k]).flatten() for k in initial])
    ds = torch.cat([(v - math.log(0.05)).flatten() for v in loaded.trainer_state["regularizer"].values()])
    assert ds.norm() > 0.01 * clip  # the sigmas did move
    assert torch.cat([dw, ds]).norm().item() == pytest.approx(clip, rel=1e-3)


def test_two_ddp_workers_keep_identical_sigmas(shakespeare, tmp_path):
    """Two DDP workers (torch.distributed, tests/ddp.py) on different shares of the corpus, adaptive
    weight noise: every evaluation, both workers report the same mean sigma, and it has moved from
    its start."""
    from seqgen.config import load
    from tests.ddp import train_ddp

    storage, _ = shakespeare
    cfg = load(None, [*TEXT, "run_name=ddp-awn", "train.seq_len=20", "train.max_steps=6", "train.eval_every=2",
                      "train.eval_tokens=1000", "train.num_workers=2", "train.cpus_per_worker=1",
                      "optim.lr=0.01"])
    per_rank = train_ddp(cfg, storage, 2, tmp_path / "reports")
    reports = [[r["awn_sigma_mean"] for r in evals] for evals in zip(*per_rank)]
    assert len(reports) == 3
    for per_worker in reports:
        assert len(per_worker) == 2 and per_worker[0] == per_worker[1], reports
    assert reports[-1][0] != pytest.approx(0.05, abs=1e-6)  # trained, not just initialised
