"""Process-wide numerical settings that must be in place before the first matrix product.

Batch invariance: a sampled row must get the same bits alone or among other rows (a seeded request
gives the same output whatever shares its batch; `seqgen.sampling` also pads batches of 1-3 rows).
MKL picks its sgemm kernels by the number of rows, and on some CPUs (measured on an AVX-512 Xeon
with MKL 2024.2 and torch 2.13: a row's bits changed at 8, 16, 17, 33 and 70 rows of 256 x 1024)
the summation order then depends on the row count. MKL's strict conditional numerical
reproducibility mode (``MKL_CBWR=AUTO,STRICT``) removes that, at no measurable cost there. MKL reads
it once, at its first call, so each process that samples applies it before computing anything:
the CLI, the serving engine's process and the test session.
"""

from __future__ import annotations

import os

BATCH_INVARIANT_ENV = {"MKL_CBWR": "AUTO,STRICT"}


def batch_invariant_env() -> dict[str, str]:
    """The settings, with any the user set already kept (for a child process's environment)."""
    return {k: os.environ.get(k, v) for k, v in BATCH_INVARIANT_ENV.items()}


def apply_batch_invariance() -> None:
    """Set them in this process (a no-op for MKL once it has computed anything)."""
    os.environ.update(batch_invariant_env())
