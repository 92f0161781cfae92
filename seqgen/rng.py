"""Counter-based random numbers: row b's draws depend only on (seed_b, step, lane), never on the batch.

Sampling in seqgen runs many independent rows in one batched step (a CLI call with several
texts, or the serving engine's running batch that requests join and leave at every step). A
stateful ``torch.Generator`` per row would force a Python loop over the rows at every step; a
counter-based generator gives every row its own reproducible stream from one vectorised call:

    u(seed, n) = mix(key + (n + 1) * GOLDEN) / 2^64,  key = mix(seed),  n = step * lanes + lane

SplitMix64 (Steele, Lea & Flood, OOPSLA 2014) is the output function of Java's SplittableRandom;
its stream at position n is exactly this expression, so a row's n-th number is computed directly
from its counter. Integer overflow wraps in torch's int64 arithmetic (two's complement), which is
the modulo 2^64 the algorithm needs; right shifts are made logical with a mask.
"""

from __future__ import annotations

import secrets

import torch
from torch import Tensor

MASK64 = (1 << 64) - 1


def _i64(x: int) -> int:
    """A 64-bit constant as the signed int64 torch stores."""
    x &= MASK64
    return x - (1 << 64) if x >= 1 << 63 else x


GOLDEN = _i64(0x9E3779B97F4A7C15)
_M1 = _i64(0xBF58476D1CE4E5B9)
_M2 = _i64(0x94D049BB133111EB)


def _shr(z: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 bit patterns."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix(z: Tensor) -> Tensor:
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    return z ^ _shr(z, 31)


MAX_RANDOM_SEED = 2**53 - 1  # drawn seeds fit every JSON parser exactly (float64), so they can be sent back


def random_seed() -> int:
    """A seed for a request that gave none (returned to the caller, so the output can be repeated)."""
    return secrets.randbelow(MAX_RANDOM_SEED + 1)


def as_seed(seed: int) -> int:
    """Any Python int -> the int64 bit pattern used as a row's seed (seeds wrap modulo 2^64)."""
    return _i64(seed)


def key(seeds: Tensor) -> Tensor:
    """(B,) int64 seeds -> their stream keys (computed once per row, reused at every step)."""
    return _mix(seeds)


def uniform(keys: Tensor, steps: Tensor, lanes: int, dtype=torch.float32) -> Tensor:
    """(B,) int64 keys (`key`), (B,) int64 step counters -> (B, lanes) uniforms in [0, 1).

    The 24 (float32) or 53 (float64) top bits are used, so no value rounds up to 1.
    """
    n = steps[:, None] * lanes + torch.arange(lanes, device=keys.device)  # (B, lanes)
    z = _mix(keys[:, None] + (n + 1) * GOLDEN)
    bits = 24 if dtype != torch.float64 else 53
    return (_shr(z, 64 - bits).to(torch.float64) * 2.0**-bits).to(dtype)


def normal_pair(u1: Tensor, u2: Tensor) -> tuple[Tensor, Tensor]:
    """Two independent N(0, 1) draws from two uniforms (Box-Muller)."""
    r = torch.sqrt(-2.0 * torch.log1p(-u1))  # 1 - u1 in (0, 1]: never log(0)
    theta = 2 * torch.pi * u2
    return r * torch.cos(theta), r * torch.sin(theta)
