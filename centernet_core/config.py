"""Experiment configuration: typed dataclasses, YAML presets, profiles, overrides, validation.

Resolution order (later wins): dataclass defaults -> experiment preset or --config YAML
-> runtime profile YAML -> repeated ``--set a.b=value`` -> ``validate`` -> batch scaling
-> a frozen ``ExperimentConfig``. Everything merges as plain dicts first, so an unknown key
or a wrongly typed value is caught in one place with a message that says what to type.
This module must not import TensorFlow: config errors are reported without it.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from centernet_core.errors import ConfigError
from centernet_core import storage

CONFIG_FILENAME = "config.yaml"

# Backbone name -> the factor the input size must be divisible by (total downsampling of
# the deepest feature map). Kept here so config validation needs no TensorFlow; a test
# checks it against the backbone registry.
BACKBONE_INPUT_DIVISOR = {
    "hourglass104": 128,
    "hourglass52": 128,
    "resnet18": 32,
    "resnet50": 32,
    "dla34": 32,
    "mobilenetv2": 32,
}
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")
EXPORT_FORMATS = ("saved_model", "tflite", "onnx")


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "resnet18"
    num_classes: int = 80
    input_size: int = 512
    width: float = 1.0  # channel multiplier for backbones that support it
    head_channels: int = 64  # 3x3 conv width of each head (256 for hourglass)
    heatmap_bias: float = -2.19  # log(0.1 / 0.9): prior probability 0.1
    bn_momentum: float = 0.9  # Keras convention (PyTorch's 0.1)
    bn_epsilon: float = 1e-5
    backbone_weights: str = ""  # local ImageNet weights file; never downloaded


@dataclass(frozen=True)
class DataConfig:
    train: str = ""  # TFRecord file pattern written by `centernet prepare`
    val: str = ""
    max_objects: int = 128
    min_overlap: float = 0.7  # CornerNet gaussian radius parameter
    random_flip: bool = True
    color_jitter: bool = True
    crop_scales: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)
    shuffle_buffer: int = 1000
    deterministic: bool = False


@dataclass(frozen=True)
class TrainConfig:
    # learning_rate, steps, warmup_steps and decay_boundaries are stated for
    # reference_batch_size; with scale_with_batch they are rescaled linearly to the
    # profile's global batch and the resolved config records the result.
    steps: int = 140_000
    reference_batch_size: int = 128
    scale_with_batch: bool = True
    optimizer: str = "adamw"
    learning_rate: float = 1e-3
    adam_epsilon: float = 1e-7
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_steps: int = 2000
    decay_boundaries: tuple[int, ...] = ()
    decay_rate: float = 0.1
    clip_norm: float = 10.0
    focal_alpha: float = 2.0
    focal_beta: float = 4.0
    size_weight: float = 0.1
    offset_weight: float = 1.0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 5
    log_every: int = 100
    eval_every: int = 0
    seed: int = 0


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 8
    max_detections: int = 100
    score_threshold: float = 0.0
    nms_iou: float = 0.0  # 0 disables class-wise NMS
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    per_class: bool = False


@dataclass(frozen=True)
class ExportConfig:
    formats: tuple[str, ...] = ("saved_model",)
    tflite_float16: bool = False
    onnx_opset: int = 17


@dataclass(frozen=True)
class RuntimeConfig:
    profile: str = ""
    strategy: str = "default"
    precision: str = "float32"
    global_batch_size: int = 16
    steps_per_loop: int = 10
    num_devices: int = 0  # 0: every visible device of the strategy's kind
    tpu: str = ""  # TPU name or grpc:// address for TPUClusterResolver
    drop_remainder: bool = False


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


# ---------------------------------------------------------------- dict <-> dataclass

def to_dict(cfg) -> dict:
    """Plain YAML-safe dict (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out


def _all_keys(cls=ExperimentConfig, prefix="") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            keys += _all_keys(t, prefix + f.name + ".")
        else:
            keys.append(prefix + f.name)
    return keys


def _unknown_key(key: str) -> ConfigError:
    keys = _all_keys()
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
    if not close:  # fall back to the keys of the same section
        section = key.split(".")[0] + "."
        close = [k for k in keys if k.startswith(section)][:6]
    hint = f"; did you mean {', '.join(close)}?" if close else f"; valid sections: {', '.join(sorted({k.split('.')[0] for k in keys}))}"
    return ConfigError(f"unknown config key '{key}'{hint}")


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _coerce(key: str, value: Any, t) -> Any:
    """Check ``value`` against the annotated type ``t``; return it in that type."""
    origin = typing.get_origin(t)
    if origin is tuple:
        inner = typing.get_args(t)[0]
        if isinstance(value, str):
            value = [yaml.safe_load(p) for p in value.split(",") if p.strip()]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]  # --set eval.scales=1.0 means one scale
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list of {_TYPE_NAMES[inner][2:] if inner is not int else 'integers'}"
                              f", got {value!r} (e.g. --set {key}=1,2)")
        return tuple(_coerce(key, v, inner) for v in value)
    if t is bool:
        if isinstance(value, bool):
            return value
    elif t is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif t is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif t is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{key}: expected {_TYPE_NAMES[t]}, got {value!r}")


def from_dict(data: dict, cls=ExperimentConfig, prefix: str = ""):
    """Build a dataclass from a (partial) dict, type-checking every value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            raise _unknown_key(prefix + str(k))
    kwargs = {}
    for k, v in data.items():
        t = hints[k]
        if dataclasses.is_dataclass(t):
            kwargs[k] = from_dict(v or {}, t, prefix + k + ".")
        else:
            kwargs[k] = _coerce(prefix + k, v, t)
    return cls(**kwargs)


def _merge(base: dict, update: dict, prefix: str = "") -> dict:
    out = dict(base)
    for k, v in (update or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v, prefix + k + ".")
        else:
            out[k] = v
    return out


# ---------------------------------------------------------------- YAML sources

def _read_yaml(text: str, source: str) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}:{where} is not valid YAML ({getattr(e, 'problem', e)}); fix the file and retry")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a YAML mapping of sections (model:, data:, ...), got {type(data).__name__}")
    return data


def experiment_names() -> list[str]:
    files = resources.files("centernet_core") / "experiments"
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".yaml"))


def profile_names() -> list[str]:
    files = resources.files("centernet_profiles")
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".yaml"))


def _choose(kind: str, name: str, valid: list[str], flag: str) -> None:
    if name not in valid:
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"unknown {kind} '{name}'{hint}; valid: {', '.join(valid)} ({flag})")


def load_experiment_yaml(name: str) -> dict:
    _choose("experiment", name, experiment_names(), "--experiment NAME or --config FILE.yaml")
    text = (resources.files("centernet_core") / "experiments" / f"{name}.yaml").read_text()
    data = _read_yaml(text, f"experiment {name}")
    data.setdefault("name", name)
    return data


def load_profile_yaml(name: str) -> dict:
    """A profile's dict: ``description`` plus a ``runtime`` section and nothing else."""
    _choose("profile", name, profile_names(), "see `centernet profiles list`")
    text = (resources.files("centernet_profiles") / f"{name}.yaml").read_text()
    data = _read_yaml(text, f"profile {name}")
    extra = set(data) - {"description", "runtime"}
    if extra:
        raise ConfigError(f"profile {name}: a profile sets only 'runtime' (and 'description'), not {sorted(extra)}")
    return data


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.steps=1000")
    key, raw = item.split("=", 1)
    key = key.strip()
    section = ExperimentConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(section)
        if part not in hints:
            raise _unknown_key(key)
        t = hints[part]
        if dataclasses.is_dataclass(t):
            if i == len(parts) - 1:
                raise ConfigError(f"--set {key}: '{key}' is a section; set one of its keys, e.g. {key}.{dataclasses.fields(t)[0].name}=...")
            section = t
        elif i != len(parts) - 1:
            raise _unknown_key(key)
    if t is str:
        return key, raw  # keep strings verbatim ("007", "1e3" stay strings)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    _coerce(key, value, t)  # type errors name the key and the expected type now
    return key, value


def _nest(key: str, value: Any) -> dict:
    out: dict = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def resolve(experiment: str | None = None, config_file: str | None = None, profile: str | None = None,
            overrides: list[str] | tuple[str, ...] = (), scale: bool = True) -> ExperimentConfig:
    """The one path from user choices to a validated, frozen config."""
    if experiment and config_file:
        raise ConfigError("give either --experiment NAME or --config FILE.yaml, not both")
    data: dict = {}
    if experiment:
        data = load_experiment_yaml(experiment)
    elif config_file:
        if not storage.exists(config_file):
            raise ConfigError(f"config file not found: {config_file}")
        data = _read_yaml(storage.read_text(config_file), config_file)
    if profile:
        p = load_profile_yaml(profile)
        data = _merge(data, {"runtime": dict(p.get("runtime") or {}, profile=profile)})
    for item in overrides:
        data = _merge(data, _nest(*_parse_override(item)))
    cfg = from_dict(data)
    validate(cfg)
    return scale_to_batch(cfg) if scale else cfg


def validate(cfg: ExperimentConfig) -> None:
    """Cross-field rules, all in one place. Raises ConfigError naming the keys."""
    m, d, t, e, r = cfg.model, cfg.data, cfg.train, cfg.eval, cfg.runtime
    checks = [
        (m.backbone in BACKBONE_INPUT_DIVISOR,
         f"model.backbone: unknown backbone '{m.backbone}'; valid: {', '.join(BACKBONE_INPUT_DIVISOR)}"),
        (m.num_classes >= 1, "model.num_classes must be at least 1"),
        (m.width > 0, "model.width must be positive"),
        (m.head_channels >= 1, "model.head_channels must be at least 1"),
        (d.max_objects >= 1, "data.max_objects must be at least 1"),
        (0.0 < d.min_overlap < 1.0, "data.min_overlap must be in (0, 1)"),
        (all(s > 0 for s in d.crop_scales) and len(d.crop_scales) > 0, "data.crop_scales must be positive numbers"),
        (t.steps >= 1, "train.steps must be at least 1"),
        (t.reference_batch_size >= 1, "train.reference_batch_size must be at least 1"),
        (t.optimizer in OPTIMIZERS, f"train.optimizer must be one of {', '.join(OPTIMIZERS)}"),
        (t.schedule in SCHEDULES, f"train.schedule must be one of {', '.join(SCHEDULES)}"),
        (t.learning_rate > 0, "train.learning_rate must be positive"),
        (0 <= t.warmup_steps < t.steps, "train.warmup_steps must be in [0, train.steps)"),
        (list(t.decay_boundaries) == sorted(t.decay_boundaries) and all(0 < b < t.steps for b in t.decay_boundaries),
         "train.decay_boundaries must be increasing steps inside (0, train.steps)"),
        (t.schedule != "step" or len(t.decay_boundaries) > 0, "train.schedule=step needs train.decay_boundaries"),
        (t.weight_decay >= 0 and t.clip_norm >= 0, "train.weight_decay and train.clip_norm must be >= 0"),
        (t.checkpoint_every >= 1 and t.keep_checkpoints >= 1 and t.log_every >= 1,
         "train.checkpoint_every, train.keep_checkpoints and train.log_every must be at least 1"),
        (t.eval_every >= 0, "train.eval_every must be >= 0 (0 disables)"),
        (e.batch_size >= 1 and e.max_detections >= 1, "eval.batch_size and eval.max_detections must be at least 1"),
        (0.0 <= e.score_threshold < 1.0, "eval.score_threshold must be in [0, 1)"),
        (0.0 <= e.nms_iou <= 1.0, "eval.nms_iou must be in [0, 1] (0 disables NMS)"),
        (all(s > 0 for s in e.scales) and len(e.scales) > 0, "eval.scales must be positive numbers"),
        (all(f in EXPORT_FORMATS for f in cfg.export.formats),
         f"export.formats: each must be one of {', '.join(EXPORT_FORMATS)}"),
        (r.strategy in STRATEGIES, f"runtime.strategy must be one of {', '.join(STRATEGIES)}"),
        (r.precision in PRECISIONS, f"runtime.precision must be one of {', '.join(PRECISIONS)}"),
        (r.global_batch_size >= 1 and r.steps_per_loop >= 1,
         "runtime.global_batch_size and runtime.steps_per_loop must be at least 1"),
        (r.num_devices >= 0, "runtime.num_devices must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    divisor = BACKBONE_INPUT_DIVISOR[m.backbone]
    if m.input_size % divisor:
        lower = max(divisor, m.input_size // divisor * divisor)
        raise ConfigError(f"model.input_size={m.input_size} must be divisible by {divisor} for backbone "
                          f"{m.backbone}; try --set model.input_size={lower}")


def scale_to_batch(cfg: ExperimentConfig) -> ExperimentConfig:
    """Linear scaling of LR and schedule lengths from reference_batch_size to the global batch.

    Idempotent: the result states the new values for reference_batch_size = global batch.
    """
    t, g = cfg.train, cfg.runtime.global_batch_size
    if not t.scale_with_batch or t.reference_batch_size == g:
        return cfg
    k = g / t.reference_batch_size
    steps = max(1, round(t.steps / k))
    train = dataclasses.replace(
        t, reference_batch_size=g, learning_rate=t.learning_rate * k, steps=steps,
        warmup_steps=min(round(t.warmup_steps / k), steps - 1),
        decay_boundaries=tuple(sorted({min(max(1, round(b / k)), steps - 1) for b in t.decay_boundaries})))
    return dataclasses.replace(cfg, train=train)


# ---------------------------------------------------------------- run directories

def dump_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_run_config(cfg: ExperimentConfig, run_dir: str) -> str:
    """Write the resolved config into ``run_dir`` (atomically) and return its path."""
    path = storage.join(run_dir, CONFIG_FILENAME)
    storage.write_text_atomic(path, dump_yaml(cfg))
    return path


def find_run_dir(path: str) -> str:
    """The run directory of ``path``: the directory itself or the one holding a checkpoint."""
    candidates = [path, storage.dirname(path), storage.dirname(storage.dirname(path))]
    for c in candidates:
        if c and storage.exists(storage.join(c, CONFIG_FILENAME)):
            return c
    raise ConfigError(f"no {CONFIG_FILENAME} found at or above {path}; pass a run directory written by "
                      "`centernet train` (or a checkpoint inside one)")


def load_run_config(path: str, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Rebuild the exact config of a run from its directory (or a checkpoint in it)."""
    run_dir = find_run_dir(path)
    cfg_path = storage.join(run_dir, CONFIG_FILENAME)
    data = _read_yaml(storage.read_text(cfg_path), cfg_path)
    for item in overrides:
        data = _merge(data, _nest(*_parse_override(item)))
    cfg = from_dict(data)
    validate(cfg)
    return cfg
