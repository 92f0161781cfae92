"""Optional API keys: ``Authorization: Bearer <key>`` on every route but /healthz and the page.

Ray Serve has no authentication of its own (ray-project/ray#59578: bring your own ingress), so
the app checks keys itself. Keys come from a file (one per line; blank lines and ``#`` comments
skipped) and/or ``$SEQGEN_API_KEYS`` (comma- or whitespace-separated). Only their SHA-256 digests
travel to the replicas (deployment arguments end up in Serve's controller and logs, keys must not),
and a presented key is hashed and compared with every digest by `hmac.compare_digest`, so neither
the comparison nor the number of keys tried leaks how much of a key was right.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from pathlib import Path

ENV = "SEQGEN_API_KEYS"
#: paths answered without a key: liveness for load balancers, and the page (it asks for a key itself)
PUBLIC_PATHS = frozenset({"/healthz", "/"})


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def read_keys(key_file: str | os.PathLike | None = None, env: dict | None = None) -> list[str]:
    """The keys of ``key_file`` and of ``$SEQGEN_API_KEYS`` (``env``: default os.environ)."""
    keys = []
    if key_file:
        for line in Path(key_file).read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                keys.append(line)
    keys += [k for k in re.split(r"[\s,]+", (os.environ if env is None else env).get(ENV, "")) if k]
    return keys


class ApiKeys:
    """The digests of the accepted keys; no digests means no keys are required."""

    def __init__(self, digests: tuple[str, ...] = ()):
        self.digests = tuple(digests)

    @classmethod
    def of(cls, keys: list[str]) -> "ApiKeys":
        return cls(tuple(sorted({digest(k) for k in keys})))

    @classmethod
    def load(cls, key_file: str | os.PathLike | None = None, env: dict | None = None) -> "ApiKeys":
        return cls.of(read_keys(key_file, env))

    @property
    def required(self) -> bool:
        return bool(self.digests)

    def allows(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries one of the keys (always, without keys)."""
        if not self.required:
            return True
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        presented = digest(token.strip())
        matched = False
        for known in self.digests:  # every digest, whatever matched: time does not depend on which
            matched |= hmac.compare_digest(presented, known)
        return matched

    def __repr__(self) -> str:  # never the digests either
        return f"ApiKeys({len(self.digests)} keys)"
