"""Serve settings, in one place: what the CLI (``seqgen serve``), the Serve config builder
(``seqgen.serve.app:app_builder``), deploy/serve_app.py and the benchmarks hand to the app and
its engine, with the one set of defaults they all share.

`EngineConfig` is how one replica's engine batches (`seqgen.serve.engine`); `ServeConfig` adds the
request deadline, the replicas and their resources, and turns into Serve's deployment options.
Values may come as strings (a config file's ``args:``, environment variables) and are converted to
the field's type; a bad or unknown setting is a ValueError naming it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MAX_TIMEOUT_S = 600.0  # the longest deadline a request may ask for
MAX_LENGTH = 5000  # the most symbols a request may ask for per sample (a deployment may allow fewer)
HEADROOM = 8  # ongoing requests beyond the engine's capacity: /healthz, /info, requests being refused


class EngineConfig(BaseModel):
    """How one replica's engine batches."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_streams: int = Field(64, ge=1, description="rows one replica generates at once (its running batch)")
    max_queued: int = Field(64, ge=0, description="requests one replica lets wait; one more gets 503 at once")
    prefill_chunk: int = Field(64, ge=1, description="prompt inputs fed per request per engine step")
    flush_interval_s: float = Field(0.05, ge=0, description="a request's new outputs are posted at most this often")
    max_chunks_per_s: float = Field(200.0, gt=0, description="with many requests running, their flush interval "
                                                              "grows to keep the chunks posted per second under this")

    @property
    def engine(self) -> "EngineConfig":
        """The engine's part of these settings (itself; `ServeConfig` has more)."""
        return EngineConfig(**{name: getattr(self, name) for name in EngineConfig.model_fields})


class ServeConfig(EngineConfig):
    """A deployment of the app: its engine (the fields of `EngineConfig`), the default deadline of
    a request, its replicas and their resources."""

    timeout_s: float = Field(60.0, gt=0, le=MAX_TIMEOUT_S, description="default deadline of a request (504 past it)")
    max_length: int = Field(MAX_LENGTH, ge=1, le=MAX_LENGTH, description="the most symbols a request may ask for "
                                                                       "per sample (length, max_tokens)")
    num_replicas: int = Field(1, ge=1, description="replicas (ignored with autoscale)")
    autoscale: tuple[int, int] | dict | None = Field(None, description="MIN:MAX replicas scaled by Serve on ongoing "
                                                                        "requests, or a whole Serve autoscaling_config")
    target_ongoing_requests: float | None = Field(None, gt=0, description="autoscaling target per replica "
                                                                           "(default: half its streams)")
    num_cpus: float = Field(1.0, ge=0, description="CPUs per replica")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica (the model goes on the GPU when it has one)")
    max_ongoing_requests: int | None = Field(None, ge=1, description="Serve's limit per replica (default: the "
                                                                      "engine's capacity + headroom)")
    health_check_period_s: float = Field(5.0, gt=0, description="how soon a replica whose engine died is replaced")
    log_format: Literal["text", "json"] = Field("text", description="the replicas' log lines, access log included "
                                                                    "(one line per request): text or json")

    @field_validator("autoscale", mode="before")
    @classmethod
    def _autoscale(cls, value):
        return parse_autoscale(value) if isinstance(value, str) or value == "" else value

    @model_validator(mode="after")
    def _replica_bounds(self):
        if self.autoscale:
            low, high = self.replica_bounds()
            if not 0 <= low <= high or high < 1:
                raise ValueError(f"autoscale needs 0 <= MIN <= MAX and MAX >= 1, got {low}:{high}")
        return self

    @classmethod
    def of(cls, **settings: Any) -> "ServeConfig":
        """The settings given by name (unknown names and bad values: a one-line ValueError)."""
        unknown = sorted(set(settings) - set(cls.model_fields))
        if unknown:
            raise ValueError(f"unknown serve setting(s) {unknown} (valid: {', '.join(cls.model_fields)})")
        try:
            return cls(**settings)
        except ValidationError as e:
            raise ValueError("bad serve setting(s): " + "; ".join(_describe(err) for err in e.errors())) from None

    def replica_bounds(self) -> tuple[int, int]:
        auto = self.autoscale if isinstance(self.autoscale, dict) else dict(zip(("min_replicas", "max_replicas"),
                                                                                 self.autoscale or ()))
        return auto.get("min_replicas", 1), auto.get("max_replicas", 1)

    def deployment_options(self) -> dict:
        """Serve's options of the deployment, its limits following the engine's.

        A replica takes at most ``max_streams + max_queued`` requests plus a little headroom (so
        /healthz is never turned away); Serve's router holds at most as many more in transit (a
        burst can put a whole replica's worth there at once) before answering 503 itself; the
        engine refuses beyond its own limits first, with the JSON 503. ``autoscale`` replaces
        ``num_replicas`` with Serve autoscaling towards ``target_ongoing_requests`` per replica.
        """
        ongoing = self.max_ongoing_requests or self.max_streams + self.max_queued + HEADROOM
        options: dict = {
            "max_ongoing_requests": ongoing,
            "max_queued_requests": ongoing,
            "ray_actor_options": {"num_cpus": self.num_cpus, **({"num_gpus": self.num_gpus} if self.num_gpus else {})},
            "health_check_period_s": self.health_check_period_s,  # a replica whose engine died is replaced this soon
            "logging_config": {"encoding": self.log_format.upper()},  # Serve's replica logger, our access log on it
        }
        if self.autoscale:
            config = dict(self.autoscale) if isinstance(self.autoscale, dict) else {}
            config["min_replicas"], config["max_replicas"] = self.replica_bounds()
            config.setdefault("initial_replicas", max(config["min_replicas"], 1))
            config.setdefault("target_ongoing_requests", self.target_ongoing_requests or max(1, self.max_streams // 2))
            options["autoscaling_config"] = config
        else:
            options["num_replicas"] = self.num_replicas
        return options


def _describe(error: dict) -> str:
    """One of pydantic's validation errors as ``name: what is wrong (got value)``."""
    where = ".".join(map(str, error["loc"]))
    if error["type"] == "value_error":  # raised by a validator here: its message says it all
        what = str(error["ctx"]["error"])
    else:
        what = f"{error['msg']} (got {error['input']!r})"
    return f"{where}: {what}" if where else what


def parse_autoscale(text: str | None) -> tuple[int, int] | None:
    """``"MIN:MAX"`` -> (MIN, MAX); None and "" are None."""
    if text is None or text == "":
        return None
    try:
        low, high = (int(p) for p in str(text).split(":"))
    except ValueError:
        raise ValueError(f"autoscale must be MIN:MAX (two integers), got {text!r}") from None
    return low, high
