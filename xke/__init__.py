"""xke: cross-lingual knowledge editing for large language models.

The public API (everything else is reachable through the subpackages)::

    lm = xke.load("tiny-llama")                                   # model + tokenizer
    handle = xke.edit(lm.model, lm.tokenizer, requests, method="rome", layers=[0])
    handle.restore()                                              # undo
    store = xke.EditStore("memory.sqlite")                        # persistent edit memory
    metrics = xke.evaluate(model="tiny-llama", data="edits.jsonl", method="rome", out="runs/r1")

Subpackages read as a map of the field:

- :mod:`xke.data`      benchmark schema (:class:`~xke.data.schema.EditCase`), loaders
- :mod:`xke.world`     the toy multilingual world and its tiny model
- :mod:`xke.models`    model loading, prompt formatting, per-architecture layer names
- :mod:`xke.methods`   editing methods behind one interface (:class:`~xke.methods.base.EditMethod`)
- :mod:`xke.memory`    persistent edit memory and retrievers
- :mod:`xke.train`     X-KDE data construction, XE-IT and TL-PO
- :mod:`xke.eval`      metrics, protocols, the evaluation runner and reports
- :mod:`xke.analysis`  geometry of edit deltas, per-layer language separation

Importing :mod:`xke` imports neither torch nor transformers: each name loads its module on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from .memory.store import EditStore
    from .methods.base import EditHandle
    from .models.loading import LoadedModel

__version__ = "0.1.0"
__all__ = ["load", "edit", "EditStore", "evaluate", "__version__"]


def load(path: str, *, dtype: str = "auto", device: str = "auto") -> "LoadedModel":
    """Load a local causal LM and its tokenizer (a model directory, a built-in tiny config such as
    ``tiny-llama``, ``world`` or ``world:DIR``); ``.model`` and ``.tokenizer`` are ready for :func:`edit`."""
    from .models.loading import load_model
    from .world.provider import model_path

    return load_model(str(model_path(path)), dtype=dtype, device=device)


def edit(model, tokenizer, requests: Iterable[Any], method: str = "rome", *, config: str | None = None,
         template: str = "auto", **options) -> "EditHandle":
    """Apply ``method``'s edits ``requests`` to ``model`` in place and return the handle that undoes them.

    ``requests`` are :class:`~xke.data.schema.EditRequest` objects or dicts with the same fields
    (``case_id``, ``lang``, ``prompt``, ``target_new``, ``subject``, optional ``target_old``, ``style``);
    ``options`` override the method's preset (e.g. ``layers=[0]``), after the YAML file ``config``;
    ``template`` is the prompt format (``auto``, ``chat``, ``plain``).
    """
    from .data.schema import EditRequest
    from .errors import DataError
    from .models.prompts import PromptFormatter

    reqs = []
    for i, r in enumerate(requests):
        if isinstance(r, EditRequest):
            reqs.append(r)
        elif isinstance(r, dict):
            try:
                reqs.append(EditRequest(**r))
            except TypeError as e:
                raise DataError(f"edit request {i} ({r.get('case_id', '?')!r}): {e}") from None
        else:
            raise DataError(f"edit request {i}: expected an EditRequest or a dict, got {type(r).__name__}")
    from .world.provider import provided_method

    # the model's provider fills what it knows (a toy-world model: its presets and statistics corpus)
    m = provided_method(method, model, tokenizer, PromptFormatter(tokenizer, mode=template), config_path=config,
                        overrides=options or None)
    return m.apply(reqs)


def evaluate(*, model: str | Any, data: str, out: str, method: str = "none", **options) -> dict[str, Any]:
    """Run an evaluation (the options of ``xke eval``, :class:`~xke.eval.runner.EvalSpec`) and return its
    metrics, also written to ``out/metrics.json``. ``model`` is a model spec, or a :func:`load` result
    to reuse a model already in memory (its weights are left as they were)."""
    from .eval.runner import EvalSpec, run_eval

    from .errors import ConfigError

    loaded = None
    if not isinstance(model, str):
        loaded, model = model, model.name
    progress = bool(options.pop("progress", False))
    options.setdefault("bench", "jsonl")
    try:
        spec = EvalSpec(model=model, out=str(out), method=method, data=str(data), **options)
    except TypeError as e:
        raise ConfigError(f"xke.evaluate: {e}") from None
    return run_eval(spec, loaded=loaded, progress=progress)


def __getattr__(name: str):
    if name == "EditStore":
        from .memory.store import EditStore

        return EditStore
    raise AttributeError(f"module 'xke' has no attribute {name!r}")
