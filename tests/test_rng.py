"""Counter-based random numbers: a row's numbers depend only on its seed and step, they are uniform
in [0, 1), and Box-Muller gives standard normals."""

import torch

from seqgen import rng


def draws(seeds, steps, lanes=3, dtype=torch.float32):
    return rng.uniform(rng.key(torch.tensor(seeds)), torch.tensor(steps), lanes, dtype)


def test_a_rows_numbers_depend_only_on_its_seed_and_step():
    together = draws([5, 6, 7], [0, 4, 9])
    for i, (seed, step) in enumerate([(5, 0), (6, 4), (7, 9)]):
        assert torch.equal(draws([seed], [step])[0], together[i])
    assert not torch.equal(draws([5], [0]), draws([6], [0])) and not torch.equal(draws([5], [0]), draws([5], [1]))


def test_uniform_in_unit_interval_with_uniform_moments():
    for dtype in (torch.float32, torch.float64):
        u = draws(list(range(2000)), [3] * 2000, lanes=50, dtype=dtype)
        assert u.dtype == dtype and float(u.min()) >= 0.0 and float(u.max()) < 1.0
        assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    wrapped = rng.as_seed(2**64 + 5)
    assert wrapped == 5 and rng.as_seed(2**63) == -(2**63)  # seeds wrap modulo 2^64 into int64


def test_normal_pair_is_standard_normal():
    u = draws(list(range(4000)), [0] * 4000, lanes=2, dtype=torch.float64)
    z = torch.cat(rng.normal_pair(u[:, 0], u[:, 1]))
    assert abs(float(z.mean())) < 0.03 and abs(float(z.std()) - 1) < 0.03


def test_random_seeds_are_json_exact():
    assert all(0 <= rng.random_seed() <= rng.MAX_RANDOM_SEED == 2**53 - 1 for _ in range(100))
