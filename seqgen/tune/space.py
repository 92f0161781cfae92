"""Search spaces: ``key=kind:args`` specs -> Ray Tune domains over dotted config keys, checked
against the config before any trial starts, and the default spaces of the two searches.

A space maps dotted config keys (``optim.lr``) to Tune domains. One key is not a config key:
``setting`` names an entry of ``REG_SETTINGS`` (several keys at once, e.g. a regulariser kind
with its std), which is how the staged search's default grid tries whole regulariser settings.
"""

from __future__ import annotations

import math

from seqgen.config import ConfigError, ExperimentConfig, leaf_type, parse_value, with_values

#: Ray Tune distributions a space spec may name: ``key=kind:args``.
SPACE_KINDS = ("choice", "grid", "uniform", "loguniform", "randint")
#: keys that decide a trial's resources or identity: set them in the base config, never search them
FIXED_KEYS = ("train.num_workers", "train.cpus_per_worker", "train.use_gpu", "run_name")
#: the space key whose values are labels of REG_SETTINGS
SETTING = "setting"

#: Stage 2's default grid (Graves 2013 sec. 3: retrain the converged net with a regulariser): the
#: none-continued control, dropout, fixed weight noise and adaptive weight noise (initial std 0.075).
REG_SETTINGS = {
    "none (continued)": {"reg.kind": "none", "model.dropout": 0.0},
    "dropout 0.2": {"reg.kind": "none", "model.dropout": 0.2},
    "dropout 0.5": {"reg.kind": "none", "model.dropout": 0.5},
    "weight noise 0.025": {"reg.kind": "weight_noise", "reg.std": 0.025},
    "weight noise 0.075": {"reg.kind": "weight_noise", "reg.std": 0.075},
    "adaptive weight noise": {"reg.kind": "adaptive_weight_noise", "reg.std": 0.075},
}


def default_space() -> dict:
    """Graves-style regularisation and optimisation knobs (dotted config key -> Tune domain)."""
    from ray import tune

    return {
        "reg.kind": tune.choice(["none", "weight_noise", "adaptive_weight_noise"]),
        "reg.std": tune.loguniform(0.01, 0.1),
        "model.dropout": tune.uniform(0.0, 0.5),
        "model.deriv_clip": tune.choice([0, 1, 10]),
        "optim.grad_norm_clip": tune.choice([0, 1, 5]),
        "optim.lr": tune.loguniform(3e-4, 3e-3),
    }


def settings_space(labels=None) -> dict:
    """A grid over whole regulariser settings (default: every entry of ``REG_SETTINGS``)."""
    from ray import tune

    return {SETTING: tune.grid_search(list(REG_SETTINGS if labels is None else labels))}


def parse_space(items: list[str] | tuple[str, ...]) -> dict:
    """Parse CLI/YAML-friendly specs into a search space (dotted config key -> Tune domain).

    ``key=choice:a,b,c``   one of the values (parsed with the key's type; strings stay strings)
    ``key=grid:a,b,c``     every value (grid search; each grid point is repeated num_samples times)
    ``key=uniform:lo:hi``  a float in [lo, hi]
    ``key=loguniform:lo:hi``  a float in [lo, hi], uniform in log space (0 < lo)
    ``key=randint:lo:hi``  an int in [lo, hi) (Tune's convention: upper bound excluded)

    Any error names the offending item.
    """
    from ray import tune

    space: dict = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"search space item {item!r} must look like section.key=kind:args "
                              f"(kinds: {', '.join(SPACE_KINDS)})")
        key, spec = (s.strip() for s in item.split("=", 1))

        def bad(why: str) -> ConfigError:
            return ConfigError(f"search space item {item!r}: {why}")

        try:
            typ = str if key == SETTING else leaf_type(key)
        except ConfigError as e:
            raise bad(str(e)) from None
        if key in space:
            raise bad(f"{key!r} is given twice")
        kind, sep, args = spec.partition(":")
        kind = kind.strip().lower()
        if not sep or kind not in SPACE_KINDS:
            raise bad(f"expected kind:args with kind one of {', '.join(SPACE_KINDS)} "
                      f"(e.g. {key}=choice:a,b or {key}=uniform:0:1)")

        if kind in ("choice", "grid"):
            raw = [v.strip() for v in args.split(",")]
            if not args.strip() or any(v == "" for v in raw):
                raise bad(f"{kind} needs a comma-separated list of values with no empty entries")
            try:
                values = [_setting(v) if key == SETTING else parse_value(key, v) for v in raw]
            except ConfigError as e:
                raise bad(str(e)) from None
            space[key] = tune.choice(values) if kind == "choice" else tune.grid_search(values)
            continue

        parts = args.split(":")
        if len(parts) != 2:
            raise bad(f"{kind} needs two bounds, {kind}:low:high")
        numeric = int if kind == "randint" else float
        if typ is bool or (typ is not float and not (typ is int and numeric is int)):
            allowed = "randint" if typ is int else "choice or grid"
            raise bad(f"{key} is {typ.__name__}: use {allowed}")
        try:
            lo, hi = (_number(p, numeric) for p in parts)
        except ValueError:
            raise bad(f"bounds must be {'integers' if numeric is int else 'finite numbers'}, got {parts}") from None
        if not lo < hi:
            raise bad(f"need low < high, got {lo} and {hi}")
        if kind == "loguniform" and lo <= 0:
            raise bad(f"loguniform needs 0 < low, got {lo}")
        space[key] = {"uniform": tune.uniform, "loguniform": tune.loguniform,
                      "randint": tune.randint}[kind](lo, hi)
    return space


def _setting(label: str) -> str:
    if label not in REG_SETTINGS:
        raise ConfigError(f"unknown setting {label!r} (valid: {', '.join(REG_SETTINGS)})")
    return label


def _number(text: str, numeric):
    value = float(text.strip())  # ValueError for non-numbers ('1e-4' is fine, unlike YAML 1.1)
    if not math.isfinite(value) or (numeric is int and not value.is_integer()):
        raise ValueError(text)
    return numeric(value)


def candidates(domain) -> list:
    """The values a domain can take (every one for grids and choices, one sample otherwise)."""
    from ray.tune.search.sample import Categorical, Domain

    if isinstance(domain, dict) and set(domain) == {"grid_search"}:
        return list(domain["grid_search"])
    if isinstance(domain, Categorical):
        return list(domain.categories)
    if isinstance(domain, Domain):
        return [domain.sample()]
    return [domain]


def check_space(base: ExperimentConfig, space: dict) -> None:
    """Reject unknown keys, resource keys, and values that do not fit the config, before any
    trial starts."""
    fixed = sorted(set(space) & set(FIXED_KEYS))
    if fixed:
        raise ConfigError(f"search space: {fixed[0]!r} decides a trial's resources, set it in the base config")
    for key, domain in space.items():
        try:
            if key != SETTING:
                leaf_type(key)
            for value in candidates(domain):
                apply_params(base, {key: value})
        except ConfigError as e:
            raise ConfigError(f"search space {key!r}: {e}") from None


def apply_params(base: ExperimentConfig, params: dict) -> ExperimentConfig:
    """``base`` with a trial's ``params`` set (a ``setting`` label first, then the other keys),
    validated strictly by the config module."""
    params = dict(params)
    values = dict(REG_SETTINGS[_setting(params.pop(SETTING))]) if SETTING in params else {}
    return with_values(base, {**values, **params})


def grid_size(space: dict) -> int:
    """Trials per sample: the product of the grid dimensions' lengths."""
    return math.prod(len(d["grid_search"]) for d in space.values() if isinstance(d, dict) and "grid_search" in d)


def mutations(space: dict) -> dict:
    """PBT's ``hyperparam_mutations``: value lists for grids and choices (explore moves to a
    neighbouring value or resamples), the domain itself for continuous dimensions."""
    from ray.tune.search.sample import Domain

    out = {}
    for key, domain in space.items():
        is_list = (isinstance(domain, dict) and "grid_search" in domain) or hasattr(domain, "categories")
        if is_list or isinstance(domain, Domain):
            out[key] = candidates(domain) if is_list else domain
    return out


def describe(params: dict) -> str:
    """A trial's parameters as one short label (``setting`` first, as written in REG_SETTINGS)."""
    parts = [str(params[SETTING])] if SETTING in params else []
    parts += [f"{k}={_short(v)}" for k, v in params.items() if k != SETTING]
    return ", ".join(parts) or "base config"


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
