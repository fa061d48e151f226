"""X-KDE inference: the edit descriptor in X-KDE's prompt, answered in the query's language.

The prompt is :func:`xke.prompts.xkde_prompt` (the X-KDE training data in
``xke.train`` reads the very same text): an instruction to answer in the query's
language, the ``[Updated Information]`` block of descriptors, then ``[Query]``.

The method renders that user message through the model's chat template
(``self.formatter``). In ``gold`` mode the case's own edit is in context (the
released X-KDE evaluation); in ``retrieve`` mode the descriptors come from the
edit memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..prompts import xkde_prompt
from .base import register_method
from .context import ContextConfig, ContextMethod


@dataclass
class XKDEConfig(ContextConfig):
    """X-KDE inference options: those of every in-context method, plus ``verbatim_descriptors``."""

    #: join the edit's question and answer as the dataset spells them (set by ``--profile xkde-release``)
    verbatim_descriptors: bool = False


@register_method
class XKDE(ContextMethod):
    """X-KDE inference: ``--method xkde`` with an X-KDE-trained ``--model``."""

    name = "xkde"
    config_class = XKDEConfig

    def render(self, edits, query) -> str:
        return xkde_prompt([(e.prompt, e.target_new) for e in edits], query.prompt, query.lang,
                           verbatim=bool(getattr(self.config, "verbatim_descriptors", False)))
