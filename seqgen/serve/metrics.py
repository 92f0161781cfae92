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


#: histogram bucket bounds: seconds (1 ms .. 10 min, about x2.5 apart) and symbols per request
SECONDS_BOUNDARIES = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0,
                      150.0, 600.0]
SYMBOLS_BOUNDARIES = [1, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 80000]


class RequestMetrics:
    """Per-request latency distributions and outcome counts as Ray Serve metrics (Prometheus adds
    ``ray_`` to the names, and ``_bucket`` / ``_sum`` / ``_count`` to a histogram's):

    * ``seqgen_http_requests`` by route, model and status (401, 404, 429/503, 504 included);
    * ``seqgen_request_seconds``: end-to-end, arrival at the replica -> last byte sent;
    * ``seqgen_queue_wait_seconds``: arrival at the engine -> joining its running batch;
    * ``seqgen_time_to_first_symbol_seconds``: arrival at the replica -> first symbol back;
    * ``seqgen_symbols_per_request``: symbols or pen points drawn.

    The last three only for requests that reached the engine. Fed by `seqgen.serve.access`
    (`observe`) once per request; /healthz is not counted (load balancers poll it)."""

    def __init__(self):
        from ray.serve import metrics

        tags = ("route", "model")
        self.requests = metrics.Counter("seqgen_http_requests", description="HTTP requests by route, model and status",
                                        tag_keys=("route", "model", "status"))
        self.latency = metrics.Histogram("seqgen_request_seconds", description="end-to-end request latency",
                                         boundaries=SECONDS_BOUNDARIES, tag_keys=tags)
        self.queue_wait = metrics.Histogram("seqgen_queue_wait_seconds", description="wait for a slot in the batch",
                                            boundaries=SECONDS_BOUNDARIES, tag_keys=tags)
        self.first_symbol = metrics.Histogram("seqgen_time_to_first_symbol_seconds",
                                              description="request arrival to its first symbol",
                                              boundaries=SECONDS_BOUNDARIES, tag_keys=tags)
        self.symbols = metrics.Histogram("seqgen_symbols_per_request", description="symbols or pen points drawn",
                                         boundaries=SYMBOLS_BOUNDARIES, tag_keys=tags)

    def observe(self, record) -> None:
        """One finished request (`seqgen.serve.access.RequestRecord`)."""
        if record.route == "/healthz":
            return
        tags = {"route": record.route, "model": record.model or ""}
        self.requests.inc(tags={**tags, "status": str(record.status)})
        self.latency.observe(record.total_s, tags=tags)
        if record.queue_wait_s is not None:
            self.queue_wait.observe(record.queue_wait_s, tags=tags)
        if record.first_symbol_s is not None:
            self.first_symbol.observe(record.first_symbol_s, tags=tags)
        if record.queue_wait_s is not None or record.symbols:
            self.symbols.observe(record.symbols, tags=tags)
