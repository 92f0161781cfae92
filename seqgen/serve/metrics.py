"""The engine's statistics as Ray Serve metrics (Prometheus, through Ray's metrics agent)."""

from __future__ import annotations

import threading
import time


class MetricsExporter:
    """Publishes the engines' statistics as Ray Serve metrics (Prometheus, via Ray's metrics agent)
    once a second, tagged with the model each engine serves (a replica runs one engine per model):
    batch occupancy, running rows, queue length, symbols/s and request outcomes."""

    def __init__(self, engines: dict, period_s: float = 1.0):
        """``engines``: model name -> its engine. One set of metric objects for all of them (Ray
        keeps one definition per metric name in a process), the model as a tag."""
        from ray.serve import metrics

        self.engines = engines
        self.period_s = period_s
        self.gauges = {
            "occupancy": metrics.Gauge("seqgen_batch_occupancy", description="rows in the running batch / max streams",
                                       tag_keys=("model",)),
            "running_rows": metrics.Gauge("seqgen_running_rows", description="rows in the running batch",
                                          tag_keys=("model",)),
            "queue_length": metrics.Gauge("seqgen_queue_length", description="requests waiting for a slot",
                                          tag_keys=("model",)),
            "symbols_per_s": metrics.Gauge("seqgen_symbols_per_second", description="symbols drawn per second",
                                           tag_keys=("model",)),
        }
        self.requests = metrics.Counter("seqgen_requests", description="requests by outcome",
                                        tag_keys=("outcome", "model"))
        self.symbols = metrics.Counter("seqgen_symbols", description="symbols and pen points drawn",
                                       tag_keys=("model",))
        self._seen: dict = {name: {} for name in engines}  # model -> outcome -> count already exported
        self._seen_symbols = dict.fromkeys(engines, 0)
        threading.Thread(target=self._run, name="seqgen-metrics", daemon=True).start()

    def export(self) -> None:
        for name, engine in self.engines.items():
            self._export(name, engine)

    def _export(self, name: str, engine) -> None:
        s, tags = engine.snapshot(), {"model": name}
        self.gauges["occupancy"].set(s["running_rows"] / engine.config.max_streams, tags=tags)
        self.gauges["running_rows"].set(s["running_rows"], tags=tags)
        self.gauges["queue_length"].set(s["queue_length"], tags=tags)
        self.gauges["symbols_per_s"].set(s["symbols_per_s"], tags=tags)
        seen = self._seen[name]
        for outcome, count in s["requests"].items():
            if count > seen.get(outcome, 0):
                self.requests.inc(count - seen.get(outcome, 0), tags={**tags, "outcome": outcome})
                seen[outcome] = count
        if s["symbols_generated"] > self._seen_symbols[name]:
            self.symbols.inc(s["symbols_generated"] - self._seen_symbols[name], tags=tags)
            self._seen_symbols[name] = s["symbols_generated"]

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
