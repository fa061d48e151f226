"""The toy world as a provider: the one place that turns ``world`` / ``world:DIR`` into explicit inputs.

General code (``xke.models``, ``xke.methods``, ``xke.memory``, ``xke.train``) knows nothing about the
world: it takes a model directory, a preset family, method options and XE-IT sources. The layers that
read user input (the CLI, the evaluation runner, the demo, ``xke.load``) ask this module:

- :func:`model_path` -- the model directory of ``world`` (the default world, built when missing),
  ``world:DIR`` (a built world) or any other spec (:func:`xke.models.loading.resolve_model_path`);
- :func:`world_dir_of` -- the one rule that finds a model's world: a world spec, a world directory, the
  ``model/`` folder of a built world, or a model trained from a world (its ``config.json`` records the
  world in ``xke_world_dir``, written by :func:`record_world`);
- :func:`provide_model` -- for a world model: the preset family ``world`` and the method options the
  world fills when the user leaves them unset: ``stats_corpus`` (``<world>/corpus.txt``), the IKE
  ``pool`` (``<world>/cases.jsonl``, ``pool_split: train``) and ``retriever_path``
  (``<world>/retriever``; trained first, once, only for a retrieve-mode run:
  :func:`xke.world.retriever.ensure_world_retriever`). The calibrated retrieval threshold
  (``threshold: auto``) is read from the retriever's ``report.json``;
- :func:`xeit_source` -- the world's XE-IT source (:mod:`xke.world.xeit_source`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the preset family of toy-world models (``xke/configs/<method>/world.yaml``)
WORLD_FAMILY = "world"


def is_world_spec(spec: Any) -> bool:
    """Whether ``spec`` is ``world`` or ``world:DIR``."""
    return isinstance(spec, str) and (spec == "world" or spec.startswith("world:"))


def _spec_world_dir(spec: str) -> Path:
    """The world directory a world spec names (``world``: the default world, built when missing)."""
    from .build import build_world, world_model_dir

    if spec == "world":
        return build_world(preset="default")
    return world_model_dir(spec.split(":", 1)[1]).parent   # a clear error when DIR is not a built world


def model_path(spec: str | Path) -> Path:
    """The local model directory of ``spec`` (a world spec, or anything :func:`resolve_model_path` takes)."""
    from ..models.loading import resolve_model_path
    from .build import world_model_dir

    if is_world_spec(spec):
        return world_model_dir(_spec_world_dir(str(spec)))
    return resolve_model_path(str(spec))


def world_dir_of(spec_or_path: str | Path | None) -> Path | None:
    """The toy-world directory behind a model spec or directory, or ``None`` for other models.

    A world spec names it; a built world directory is one; for a model directory whose ``config.json``
    marks a toy-world model (``xke_world``) it is the world recorded in ``xke_world_dir`` when that is a
    built world, else the directory holding the model when the model is a world's ``model/`` folder."""
    if spec_or_path is None:
        return None
    if is_world_spec(spec_or_path):
        return _spec_world_dir(str(spec_or_path))
    p = Path(spec_or_path).expanduser()
    if (p / "world.json").exists():
        return p
    try:
        cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(cfg, dict) or not cfg.get("xke_world"):
        return None
    recorded = cfg.get("xke_world_dir")
    if recorded and (Path(recorded) / "world.json").exists():
        return Path(recorded)
    return p.parent if p.name == "model" and (p.parent / "world.json").exists() else None


@dataclass
class ProvidedModel:
    """What a model spec stands for: its directory, the preset family to use (``None``: the model's own
    ``model_type``) and method options filled for it (below the user's config and overrides)."""

    path: Path
    family: str | None = None
    method_defaults: dict[str, Any] = field(default_factory=dict)
    world_dir: Path | None = None


def world_method_defaults(world_dir: str | Path, *, retrieve: bool = False) -> dict[str, Any]:
    """The method options a world fills: statistics corpus, IKE pool (train split), dense retriever.
    ``retrieve``: the run retrieves edits, so a missing world retriever is trained first (never otherwise)."""
    wd = Path(world_dir)
    out: dict[str, Any] = {}
    if (wd / "corpus.txt").exists():
        out["stats_corpus"] = str(wd / "corpus.txt")
    if (wd / "cases.jsonl").exists():
        out["pool"] = str(wd / "cases.jsonl")
        out["pool_split"] = "train"
    if retrieve:
        from .retriever import ensure_world_retriever

        ensure_world_retriever(wd)
    if (wd / "retriever" / "modules.json").exists():
        out["retriever_path"] = str(wd / "retriever")
    return out


def provide_model(spec: str | Path, *, retrieve: bool = False) -> ProvidedModel:
    """The explicit inputs for model ``spec`` (see module docstring); ``retrieve`` as in
    :func:`world_method_defaults`. Models outside any world get their directory only."""
    if is_world_spec(spec):
        return _provided(model_path(spec), world_dir_of(spec), retrieve)
    return provide_dir(model_path(spec), retrieve=retrieve)


def provide_dir(path: str | Path, *, retrieve: bool = False) -> ProvidedModel:
    """:func:`provide_model` for a model directory already resolved (a loaded model's ``path``); a path that
    is no toy-world model (or no directory at all) gets nothing filled."""
    return _provided(Path(path), world_dir_of(path), retrieve)


def _provided(path: Path, world_dir: Path | None, retrieve: bool) -> ProvidedModel:
    if world_dir is None:
        return ProvidedModel(path=path)
    return ProvidedModel(path=path, family=WORLD_FAMILY,
                         method_defaults=world_method_defaults(world_dir, retrieve=retrieve), world_dir=world_dir)


def provide_loaded(model: Any, *, retrieve: bool = False) -> ProvidedModel | None:
    """:func:`provide_dir` for an already loaded model (its ``name_or_path``); ``None`` when unknown."""
    name = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    return provide_dir(name, retrieve=retrieve) if name else None


def record_world(model_dir: str | Path, world_dir: str | Path | None) -> None:
    """Write ``world_dir`` into a trained toy-world model's ``config.json`` (``xke_world_dir``), so
    :func:`world_dir_of` finds its world (retriever, corpus, pool) from anywhere."""
    cfg_path = Path(model_dir) / "config.json"
    if world_dir is None or not cfg_path.exists() or not (Path(world_dir) / "world.json").exists():
        return
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if not cfg.get("xke_world"):
        return
    cfg["xke_world_dir"] = str(Path(world_dir).resolve())
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def provide_args(args: Any) -> None:
    """Turn the world specs of a parsed command line into explicit inputs, for the commands whose handlers
    take them explicitly (``args.provide``: argument name -> ``"model"`` or ``"sources"``, set by
    :mod:`xke.train.commands`): a model argument becomes the model directory, a source list's ``world`` /
    ``world:DIR`` entries become :class:`~xke.world.xeit_source.WorldSource` objects."""
    for name, kind in (getattr(args, "provide", None) or {}).items():
        value = getattr(args, name, None)
        if kind == "model" and is_world_spec(value):
            setattr(args, name, str(model_path(value)))
        elif kind == "sources" and value:
            from .xeit_source import WorldSource

            setattr(args, name, [WorldSource(s) if is_world_spec(s) else s for s in value])


def provided_method(name: str, model: Any, tokenizer: Any, formatter: Any, **kw: Any) -> Any:
    """:func:`xke.methods.base.build_method` with what the model's provider gives it (for a toy-world model:
    the ``world`` presets, statistics corpus, IKE pool and retriever), as ``xke.edit`` does."""
    from ..methods.base import build_method

    p = provide_loaded(model)
    return build_method(name, model, tokenizer, formatter, family=p.family if p else None,
                        defaults=p.method_defaults if p else None, **kw)
