"""Configuration: dataclasses, YAML files and strict ``section.key=value`` overrides.

An unknown key or a value of the wrong type is an error that names it. The resolved config is
saved as JSON with every run and checkpoint, so loading a model never needs the training script.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class ModelConfig:
    kind: str = "text"  # text | handwriting_prediction | handwriting_synthesis | handwriting_recognition
    cell: str = "lstm"  # lstm | rnn | gru | scrn
    hidden_size: int = 256
    num_layers: int = 2
    peephole: bool = False  # Graves' eqs. 7-11 cell-to-gate weights (forces the time-loop path)
    skip: bool = True  # input -> every layer and every layer -> output (sec. 2)
    embedding_dim: int = 0  # 0 = one-hot inputs, as in the paper
    dropout: float = 0.0  # between layers (char-rnn: 0.5)
    deriv_clip: float = 0.0  # LSTM derivative clipping range [-c, c]; 0 = off (sec. 2)
    context_size: int = 40  # SCRN slow context units
    alpha: float = 0.95  # SCRN context decay (fixed)
    mixture_components: int = 20  # handwriting: M bivariate Gaussians (sec. 4)
    window_components: int = 10  # handwriting synthesis: K window Gaussians (sec. 5)
    output_clip: float = 0.0  # handwriting: clip dL/dyhat to [-c, c]; 0 = off
    frame_stack: int = 1  # handwriting recognition: consecutive pen points per BiLSTM input frame


@dataclass
class OptimConfig:
    name: str = "adam"  # sgd | graves_rmsprop | rmsprop | adam
    lr: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_decay: float = 1.0  # multiply the learning rate by this ...
    lr_decay_every: int = 1000  # ... every this many steps ...
    lr_decay_after: int = 0  # ... once this many steps have passed
    grad_norm_clip: float = 5.0  # global-norm clipping; 0 = off


@dataclass
class RegConfig:
    kind: str = "none"  # none | weight_noise | adaptive_weight_noise
    std: float = 0.075  # fixed noise std, or the initial std of adaptive noise


@dataclass
class TrainConfig:
    batch_size: int = 32  # parallel streams (text) or lines (handwriting) per step
    seq_len: int = 100  # truncated-BPTT window length (text)
    reset_every: int = 0  # reset the carried state every N windows; 0 = only at epoch start
    shuffle: bool = False  # shuffle windows (resets state every window)
    max_steps: int = 1000
    max_minutes: float = 0.0  # wall-clock budget; 0 = none
    eval_every: int = 200
    eval_tokens: int = 0  # cap on validation tokens per evaluation; 0 = whole split
    patience: int = 0  # early stopping after N evaluations without improvement; 0 = off
    keep_checkpoints: int = 2  # best checkpoints kept (the latest is always kept)
    seed: int = 0
    init_from: str = ""  # checkpoint URL to initialise weights from (sec. 3.1 retraining); with a
    # model.hidden_size a multiple of its own, a wider network starting as it (seqgen.models.widen)
    num_workers: int = 0  # Ray Train workers; 0 = run in the driver process (local mode)
    cpus_per_worker: int = 2
    use_gpu: str = "auto"  # auto (= when the Ray cluster has GPUs) | true | false
    precision: str = "fp32"  # fp32 | bf16 (autocast on GPU only)
    max_failures: int = 3  # worker-group restarts (from the last checkpoint) before the run fails; -1 = no limit
    progress: bool = True
    augment: float = 0.0  # handwriting recognition: random scale / slant of training lines, as a fraction (0 = off)
    join_lines: float = 0.0  # handwriting synthesis: add this fraction of consecutive-line pairs of one writer, joined as priming joins them

    def __post_init__(self):
        if isinstance(self.use_gpu, bool):  # Python callers may still pass a bool
            self.use_gpu = str(self.use_gpu).lower()
        for key, allowed in (("use_gpu", ("auto", "true", "false")), ("precision", ("fp32", "bf16"))):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"config key 'train.{key}' must be one of {', '.join(allowed)}, "
                                  f"got {getattr(self, key)!r}")
        if self.max_failures < -1:
            raise ConfigError(f"config key 'train.max_failures' must be >= -1, got {self.max_failures}")


@dataclass
class ExperimentConfig:
    run_name: str = "shakespeare-lstm"
    dataset: str = "shakespeare"
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    reg: RegConfig = field(default_factory=RegConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(ValueError):
    pass


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass ``cls`` from ``data`` strictly: unknown keys and wrong types are errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key {_join(where, unknown[0])!r} (valid: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, _join(where, key))
    return cls(**kwargs)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _coerce(typ, value, where: str):
    if dataclasses.is_dataclass(typ):
        return from_dict(typ, value, where)
    if typ is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:  # ints, and YAML 1.1's strings such as '1e-3'
            return float(value)
        except ValueError:
            pass
    if typ is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads '1e-4' (no dot) as a string
    if typ is str and value is None:
        return ""
    if typ is str and isinstance(value, bool):  # YAML reads true/false as booleans (train.use_gpu: true)
        return str(value).lower()
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ConfigError(f"config key {where!r} must be {typ.__name__}, got {value!r}")
    return value


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Load a YAML file (or the defaults) and apply ``section.key=value`` overrides."""
    data = {}
    if path:
        text = Path(path).read_text()
        data = yaml.safe_load(text) or {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        node = data
        keys = dotted.strip().split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
        node[keys[-1]] = _parse_scalar(raw, _field_type(keys))
    return from_dict(ExperimentConfig, data)


def _field_type(keys: list[str]):
    cls = ExperimentConfig
    for key in keys:
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        if key not in hints:
            raise ConfigError(f"unknown config key {'.'.join(keys)!r}")
        cls = hints[key]
    return cls


def _parse_scalar(raw: str, typ):
    if typ is str:  # 'init_from=1e3' stays a string
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def load_json(data: dict) -> ExperimentConfig:
    return from_dict(ExperimentConfig, data)


# -- setting values by dotted key (the public API tools such as ``seqgen.tune`` build on) --------


def leaf_type(key: str) -> type:
    """The type of dotted config key ``key`` (``"optim.lr"`` -> float); a ConfigError naming the
    key unless it is a value (not a section) of ``ExperimentConfig``."""
    typ = _field_type(key.split("."))
    if dataclasses.is_dataclass(typ):
        raise ConfigError(f"config key {key!r} is a section, not a value")
    return typ


def parse_value(key: str, raw: str):
    """Command-line text as a value of dotted key ``key``, read as an override would be and
    checked against the key's type: ``parse_value("optim.lr", "1e-4") == 1e-4``."""
    typ = leaf_type(key)
    return _coerce(typ, _parse_scalar(raw.strip(), typ), key)


def with_values(cfg: ExperimentConfig, values: dict) -> ExperimentConfig:
    """A copy of ``cfg`` with dotted-key ``values`` set, validated as strictly as a YAML file."""
    data = to_dict(cfg)
    for key, value in values.items():
        leaf_type(key)
        *sections, leaf = key.split(".")
        node = data
        for section in sections:
            node = node[section]
        # numpy scalars (Tune samples some) -> Python scalars, for the config and its JSON
        node[leaf] = value.item() if hasattr(value, "item") and not isinstance(value, (str, list, dict)) else value
    return from_dict(ExperimentConfig, data)
