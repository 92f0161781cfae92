"""The engine's statistics as Ray Serve metrics (Prometheus, through Ray's metrics agent)."""

from __future__ import annotations

import threading
import time


class MetricsExporter:
    """Publishes the engine's statistics as Ray Serve metrics (Prometheus, via Ray's metrics agent)
    once a second: batch occupancy, running rows, queue length, symbols/s and request outcomes."""

    def __init__(self, engine, period_s: float = 1.0):
        from ray.serve import metrics

        self.engine = engine
        self.period_s = period_s
        self.gauges = {
            "occupancy": metrics.Gauge("seqgen_batch_occupancy", description="rows in the running batch / max streams"),
            "running_rows": metrics.Gauge("seqgen_running_rows", description="rows in the running batch"),
            "queue_length": metrics.Gauge("seqgen_queue_length", description="requests waiting for a slot"),
            "symbols_per_s": metrics.Gauge("seqgen_symbols_per_second", description="symbols drawn per second"),
        }
        self.requests = metrics.Counter("seqgen_requests", description="requests by outcome", tag_keys=("outcome",))
        self.symbols = metrics.Counter("seqgen_symbols", description="symbols and pen points drawn")
        self._seen: dict = {}
        self._seen_symbols = 0
        threading.Thread(target=self._run, name="seqgen-metrics", daemon=True).start()

    def export(self) -> None:
        s = self.engine.snapshot()
        self.gauges["occupancy"].set(s["running_rows"] / self.engine.config.max_streams)
        self.gauges["running_rows"].set(s["running_rows"])
        self.gauges["queue_length"].set(s["queue_length"])
        self.gauges["symbols_per_s"].set(s["symbols_per_s"])
        for outcome, count in s["requests"].items():
            if count > self._seen.get(outcome, 0):
                self.requests.inc(count - self._seen.get(outcome, 0), tags={"outcome": outcome})
                self._seen[outcome] = count
        if s["symbols_generated"] > self._seen_symbols:
            self.symbols.inc(s["symbols_generated"] - self._seen_symbols)
            self._seen_symbols = s["symbols_generated"]

    def _run(self) -> None:
        while True:
            time.sleep(self.period_s)
            try:
                self.export()
            except Exception:  # noqa: BLE001 - metrics must never take the replica down
                pass
