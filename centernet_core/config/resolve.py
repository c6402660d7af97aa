"""From user choices to a frozen config: YAML presets, profiles, ``--set`` overrides.

Resolution order (later wins): dataclass defaults -> experiment preset or --config YAML
-> runtime profile YAML -> overrides (``--set a.b=value`` and every CLI flag, turned into
the same ``a.b=value`` items) -> ``validate`` -> batch scaling -> a frozen
``ExperimentConfig``. Everything merges as plain dicts first, so an unknown key or a
wrongly typed value is caught in one place with a message that says what to type.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from importlib import resources
from typing import Any

import yaml

from centernet_core import storage
from centernet_core.config.schema import AUTO, ExperimentConfig
from centernet_core.config.validate import validate
from centernet_core.errors import ConfigError

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
    if origin in (typing.Union, types.UnionType):  # int | str: a whole number or "auto"
        if value == AUTO:
            return value
        try:
            return _coerce(key, value, int)
        except ConfigError:
            raise ConfigError(f"{key}: expected an integer or {AUTO}, got {value!r}") from None
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


def override(cfg: ExperimentConfig, overrides: list[str] | tuple[str, ...]) -> ExperimentConfig:
    """``cfg`` with ``overrides`` (``a.b=value`` items) applied, type-checked and validated;
    no batch scaling. The one way to change a resolved config."""
    data = to_dict(cfg)
    for item in overrides:
        data = _merge(data, _nest(*_parse_override(item)))
    new = from_dict(data)
    validate(new)
    return new


def fit_to_data(cfg: ExperimentConfig, metadata: dict) -> ExperimentConfig:
    """``cfg`` completed from the training data's metadata, when training starts.

    ``model.num_classes: auto`` becomes the category table's length (a stated number that
    differs is an error); ``train.epochs > 0`` becomes ``train.steps`` (and warmup / decay
    points from ``warmup_epochs`` / ``decay_epochs``) at the global batch.
    """
    items = []
    n = len(metadata.get("categories", []))
    if cfg.model.num_classes == AUTO:
        if n < 1:
            raise ConfigError("model.num_classes is auto but the training data has no category table; "
                              "prepare it with `centernet prepare` or set model.num_classes")
        items.append(f"model.num_classes={n}")
    elif n and cfg.model.num_classes != n:
        raise ConfigError(f"the dataset of --data has {n} categories but model.num_classes is "
                          f"{cfg.model.num_classes}; add --set model.num_classes={n} (or auto)")
    if cfg.model.task == "keypoints":
        items += _keypoint_items(cfg, metadata)
    t = cfg.train
    if t.epochs > 0:
        images = int(metadata.get("images", 0))
        if images < 1:
            raise ConfigError("train.epochs needs the image count of the training data's metadata; "
                              "prepare it with `centernet prepare` or set train.steps")
        per_epoch = math.ceil(images / cfg.runtime.global_batch_size)
        steps = max(2, round(t.epochs * per_epoch))
        warmup = min(round(t.warmup_epochs * per_epoch), steps - 1)
        decay = sorted({min(max(1, round(e * per_epoch)), steps - 1) for e in t.decay_epochs})
        items += [f"train.steps={steps}", f"train.warmup_steps={warmup}",
                  f"train.decay_boundaries={','.join(map(str, decay))}" if decay else "train.decay_boundaries=[]"]
    return override(cfg, items) if items else cfg


def _keypoint_items(cfg: ExperimentConfig, metadata: dict) -> list[str]:
    """The keypoints task's J, flip permutation and OKS sigmas from the data's ``keypoints`` layout."""
    layout = metadata.get("keypoints") or {}
    names = layout.get("names", [])
    if not names:
        raise ConfigError("model.task is keypoints but the training data has no keypoints; prepare a COCO "
                          "keypoint json (categories with 'keypoints' names) or `prepare shapes --keypoints`")
    j = len(names)
    if cfg.model.num_keypoints not in (AUTO, j):
        raise ConfigError(f"the training data has {j} keypoints but model.num_keypoints is "
                          f"{cfg.model.num_keypoints}; add --set model.num_keypoints=auto")
    items = [f"model.num_keypoints={j}"]
    if not cfg.model.keypoint_flip:
        items.append(f"model.keypoint_flip=[{','.join(str(i) for i in layout.get('flip', range(j)))}]")
    if not cfg.eval.keypoint_sigmas and layout.get("sigmas"):
        items.append(f"eval.keypoint_sigmas=[{','.join(repr(float(s)) for s in layout['sigmas'])}]")
    return items


def from_yaml_text(text: str, source: str, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """A saved (already resolved) config from its YAML text, with ``overrides`` applied and
    validated; no batch scaling (the saved values are the run's own)."""
    data = _read_yaml(text, source)
    for item in overrides:
        data = _merge(data, _nest(*_parse_override(item)))
    cfg = from_dict(data)
    validate(cfg)
    return cfg



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

def dump_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)

