"""The one small interface every editing method implements.

A method is built on a loaded model and tokenizer, then asked to
:meth:`EditMethod.apply` a list of :class:`~xke.data.schema.EditRequest`;
it returns an :class:`EditHandle` whose :meth:`~EditHandle.restore` undoes the
edits (bit-identically for weight edits). The evaluation runner asks the
method how to prompt each :class:`~xke.data.schema.Query` through
:meth:`EditMethod.prompt`: weight-editing methods use the plain formatted
question, in-context methods put edit descriptors in front of it.

Methods register by name in ``METHOD_MODULES`` and are imported lazily.
"""

from __future__ import annotations

import dataclasses
import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import torch

from ..config import ConfigError, from_dict, list_presets, load_preset, merge, read_yaml
from ..data.schema import EditRequest, Query
from ..models.prompts import PromptFormatter

MethodKind = Literal["none", "weight", "context"]

#: method name -> module defining it (imported on first use)
METHOD_MODULES: dict[str, str] = {
    "none": "xke.methods.none",
    "ft-l": "xke.methods.ft",
    "ft-m": "xke.methods.ft",
    "rome": "xke.methods.rome",
    "memit": "xke.methods.memit",
    "alphaedit": "xke.methods.alphaedit",
    "pmet": "xke.methods.pmet",
    "ike": "xke.methods.ike",
    "lte": "xke.methods.lte",
    "xkde": "xke.methods.xkde",
}

_REGISTRY: dict[str, type["EditMethod"]] = {}


@dataclass
class MethodConfig:
    """Options shared by all methods; each method subclasses this with its own."""

    def validate(self) -> None:  # overridden where needed
        return None


class EditHandle(ABC):
    """What :meth:`EditMethod.apply` returns: undo the edits, and report weight changes."""

    @abstractmethod
    def restore(self) -> None:
        """Undo the edits this handle stands for."""

    def deltas(self) -> dict[str, torch.Tensor]:
        """Weight change of each edited matrix (current minus original); empty for in-context methods."""
        return {}


class NoOpHandle(EditHandle):
    def restore(self) -> None:
        return None


class WeightSnapshot(EditHandle):
    """Saves named parameters before an edit; :meth:`restore` copies them back bit for bit."""

    def __init__(self, model: torch.nn.Module, param_names: Sequence[str]):
        self.model = model
        params = dict(model.named_parameters())
        missing = [n for n in param_names if n not in params]
        if missing:
            raise ConfigError(f"model has no parameter(s) {missing}")
        self.originals = {n: params[n].detach().clone() for n in param_names}

    def restore(self) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for n, w in self.originals.items():
                params[n].copy_(w)

    def deltas(self) -> dict[str, torch.Tensor]:
        params = dict(self.model.named_parameters())
        return {n: (params[n].detach().float() - w.float()).cpu() for n, w in self.originals.items()}


class EditMethod(ABC):
    """Base class of editing methods.

    Subclasses set ``name``, ``kind`` and ``config_class`` and implement
    :meth:`apply`. ``model_family`` selects the YAML preset
    (``xke/configs/<name>/<family>.yaml``).
    """

    name: ClassVar[str]
    kind: ClassVar[MethodKind] = "weight"
    config_class: ClassVar[type[MethodConfig]] = MethodConfig

    def __init__(self, model: torch.nn.Module, tokenizer: Any, formatter: PromptFormatter,
                 config: MethodConfig | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.formatter = formatter
        self.config = config if config is not None else self.config_class()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @abstractmethod
    def apply(self, requests: Sequence[EditRequest]) -> EditHandle:
        """Apply ``requests`` together (one batch) and return a handle that undoes them."""

    def prompt(self, query: Query) -> str:
        """The full prompt string the model reads for ``query`` (after edits are applied)."""
        return self.formatter.format(query.prompt, query.style)

    def close(self) -> None:
        """Release resources (memories, files)."""
        return None


def register_method(cls: type[EditMethod]) -> type[EditMethod]:
    """Class decorator adding a method to the registry under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def method_names() -> list[str]:
    return list(METHOD_MODULES)


def get_method_class(name: str) -> type[EditMethod]:
    """The class registered as ``name`` (importing its module); a clear error if unknown."""
    key = name.lower()
    if key not in METHOD_MODULES:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(METHOD_MODULES)}")
    if key not in _REGISTRY:
        try:
            importlib.import_module(METHOD_MODULES[key])
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("xke."):
                raise ConfigError(f"method {name!r} is not available in this version of xke") from e
            raise
    if key not in _REGISTRY:
        raise ConfigError(f"method {name!r} is not available in this version of xke")
    return _REGISTRY[key]


def model_family(model: torch.nn.Module) -> str:
    """Preset family of a model: its ``config.model_type`` (callers that know better pass ``family``)."""
    return getattr(getattr(model, "config", None), "model_type", "default")


def build_method_config(name: str, *, family: str | None = None, config_path: str | Path | None = None,
                        overrides: dict[str, Any] | None = None,
                        defaults: dict[str, Any] | None = None) -> MethodConfig:
    """Config for method ``name``: packaged preset for ``family`` (or ``default``), then ``defaults`` (options
    the model's provider fills, e.g. a statistics corpus; those the method does not have are ignored), then the
    user's YAML (its ``method:`` section, or the whole file when it has none), then ``overrides``; validated. A
    ``layers`` given by the user replaces the preset's ``layers_by_depth`` too."""
    cls = get_method_class(name)
    group = name.lower()
    presets = list_presets(group)
    preset: dict[str, Any] = {}
    source = "defaults"
    if family and family in presets:
        preset, source = load_preset(group, family), f"preset {group}/{family}.yaml"
    elif "default" in presets:
        preset, source = load_preset(group, "default"), f"preset {group}/default.yaml"
    user: dict[str, Any] = {}
    if config_path:
        raw = read_yaml(config_path)
        user = raw["method"] if isinstance(raw.get("method"), dict) else raw
        source = f"{config_path} (method options)"
    preset = {k: v for k, v in preset.items() if not k.startswith("_")}
    known = {f.name for f in dataclasses.fields(cls.config_class)}
    preset.update({k: v for k, v in (defaults or {}).items() if k in known})
    chosen = {**user, **(overrides or {})}
    if "layers" in chosen and "layers_by_depth" not in chosen:
        preset.pop("layers_by_depth", None)   # layers the user names are the layers edited, at every depth
    merged = merge(preset, user, overrides)
    return from_dict(cls.config_class, merged, source=source)


def build_method(name: str, model: torch.nn.Module, tokenizer: Any, formatter: PromptFormatter, *,
                 config_path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                 family: str | None = None, defaults: dict[str, Any] | None = None) -> EditMethod:
    """Instantiate method ``name`` on a loaded model with its validated config: presets of ``family``
    (default: the model's ``model_type``), ``defaults`` from the model's provider (see
    :func:`build_method_config`)."""
    cls = get_method_class(name)
    cfg = build_method_config(name, family=family or model_family(model), config_path=config_path,
                              overrides=overrides, defaults=defaults)
    return cls(model, tokenizer, formatter, cfg)
