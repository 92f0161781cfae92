"""Ways of serving that only the endpoint benchmark measures, as baselines for seqgen's own
(`bench_serve.py`); seqgen itself serves one way: continuous batching, the engine in a child
process of the replica, HTTP through Serve's proxy or HAProxy.

* request-level batching: the engine admits a new batch only when the running one is done (what
  continuous batching is compared with);
* the engine in a thread of the replica, sharing its GIL with the event loop;
* "direct" ingress: each replica serves HTTP on its own port (30000 and up) with nothing in front.

The engine factories go to ``build_app(make_engine=...)`` and run in the replicas, which import
this module from the benchmark's directory (Ray puts a driver script's directory on its workers'
path); the request-level engine crosses to the engine process the same way.
"""

from __future__ import annotations

import os
import sys

from seqgen.serve.config import EngineConfig
from seqgen.serve.engine import Engine
from seqgen.serve.engine_process import EngineProcess


class RequestLevelEngine(Engine):
    """Request-level batching: waiting requests join only an empty batch, so a short request that
    arrives while a long one runs waits for all of it."""

    def _admit(self) -> None:
        if len(self.decoder) or self._priming:
            return  # the running batch finishes first
        super()._admit()


def request_level_engine(gen, config: EngineConfig) -> EngineProcess:
    """Request-level batching in the engine's own process (the process is seqgen's way)."""
    return EngineProcess(gen, config, engine_class=RequestLevelEngine)


def thread_engine(gen, config: EngineConfig) -> Engine:
    """Continuous batching in a thread of the replica instead of a process of its own."""
    return Engine(gen, config)


ENGINES = {"process": None, "thread": thread_engine, "request-level": request_level_engine}  # None: seqgen's own

#: Serve's throughput-optimized mode without HAProxy: replicas answer HTTP themselves
DIRECT_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


def select_direct_ingress() -> None:
    """Put direct ingress in this process's environment, for the Ray it starts (every Ray process
    reads the switches when ``ray.serve`` is imported, so before that)."""
    if "ray.serve" in sys.modules:
        raise RuntimeError("direct ingress must be chosen before ray.serve is imported")
    os.environ.pop("RAY_SERVE_ENABLE_HA_PROXY", None)
    os.environ.update(DIRECT_ENV)
