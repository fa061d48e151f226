"""Dataclass configs loaded from YAML presets, validated on load.

Every configurable component (an editing method, a training stage) has a
dataclass of its options. :func:`from_dict` builds one from a mapping,
rejecting unknown keys and values of the wrong type with a message that names
the file and key. Presets live in ``xke/configs/<group>/<name>.yaml`` and are
read with ``yaml.safe_load``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

T = TypeVar("T")


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for a in args:
            if a is type(None) and value is None:
                return None
            if a is type(None):
                continue
            try:
                return _check_type(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} does not match {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        inner = args[0] if args else Any
        out = [_check_type(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return out if origin is list else tuple(out)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source=where)
    return value


#: numeric options that must be > 0 (learning rates, sizes, step and sample counts, ...)
POSITIVE_KEYS = re.compile(
    r"^(lr|v_lr|learning_rate|beta|timeout_s|dim|heads|intermediate|vocab_size|d_model|d_ff|n_layers|n_heads|"
    r"max_position|seq_len|batch_rows|max_seq_length|max_length|max_new_tokens|max_tokens|token_budget|epochs|"
    r"num_train_epochs|n|top_k|faiss_min|n_cases|v_steps|steps|mom2_n_samples|mom2_max_length|mom2_batch_size|"
    r"mom2_update_weight|per_device_\w*batch_size|gradient_accumulation_steps|max_concurrency|logging_steps|"
    r"save_steps|lora_r|lora_alpha|threads|cache_budget_mb|clamp_norm_factor|max_grad_norm|l2|n_people|"
    r"n_countries|n_companies|cities_per_country|cases_per_subject)$")
#: numeric options that are fractions or probabilities, in [0, 1]
UNIT_KEYS = re.compile(r"(fraction|ratio|share|dropout|^top_p|^latin_\w+|^reading_(cross|counterfactual|single|"
                       r"qa_form|same_form)|^warmup)$")
#: numeric options that may be negative (any finite value); every other one must be >= 0
SIGNED_KEYS = re.compile(r"^(seed|layers|layer|threshold|min_quality_score|flaw_threshold|residual_power)$")


def check_number_range(key: str, value: Any, where: str) -> None:
    """Range rule of numeric option ``key`` (see :data:`POSITIVE_KEYS`, :data:`UNIT_KEYS`,
    :data:`SIGNED_KEYS`): finite always; > 0, in [0, 1], any, or >= 0 (the default). ``max_steps``
    may be -1 (train by epochs). Lists are checked element by element."""
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_number_range(key, v, f"{where}[{i}]")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    if SIGNED_KEYS.search(key):
        return
    if key == "max_steps":
        if value < -1 or value == 0:
            raise ConfigError(f"{where}: expected a positive number of steps or -1 (train by epochs), got {value!r}")
        return
    if key == "warmup_steps":  # a count, or a fraction of the steps when below 1
        ok = value >= 0
    elif UNIT_KEYS.search(key):
        if not 0 <= value <= 1:
            raise ConfigError(f"{where}: expected a fraction between 0 and 1, got {value!r}")
        return
    elif POSITIVE_KEYS.search(key):
        if not value > 0:
            raise ConfigError(f"{where}: expected a number > 0, got {value!r}")
        return
    else:
        ok = value >= 0
    if not ok:
        raise ConfigError(f"{where}: expected a number >= 0, got {value!r}")


def from_dict(cls: type[T], data: dict[str, Any] | None, *, source: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, validating keys and types."""
    data = dict(data or {})
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} for {cls.__name__}; valid keys: {sorted(fields)}")
    kwargs = {k: _check_type(v, hints[k], f"{source}: key '{k}'") for k, v in data.items()}
    for k, v in kwargs.items():
        check_number_range(k, v, f"{source}: key '{k}'")
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{source}: {e}") from e
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError:
            raise
        except ValueError as e:
            raise ConfigError(f"{source}: {e}") from e
    return obj


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``safe_load``; a clear error for bad syntax or a non-mapping."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config {p}: {e}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at top level, got {type(data).__name__}")
    return data


def preset_path(group: str, name: str) -> Path:
    """Path of the packaged preset ``xke/configs/<group>/<name>.yaml``."""
    return Path(str(resources.files("xke") / "configs" / group / f"{name}.yaml"))


def list_presets(group: str) -> list[str]:
    """Names of the packaged presets in ``group``."""
    d = Path(str(resources.files("xke") / "configs" / group))
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def load_preset(group: str, name: str) -> dict[str, Any]:
    """The packaged preset as a mapping; a clear error listing the available ones."""
    p = preset_path(group, name)
    if not p.exists():
        raise ConfigError(f"no preset {name!r} for {group}; available: {list_presets(group)}")
    return read_yaml(p)


def merge(*maps: dict[str, Any] | None) -> dict[str, Any]:
    """Shallow-merge mappings, later ones winning."""
    out: dict[str, Any] = {}
    for m in maps:
        out.update(m or {})
    return out
