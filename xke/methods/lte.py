"""LTE (Learning to Edit) inference: edits as "updated information" before the question.

The prompt is :func:`xke.prompts.lte_prompt`: LTE's instruction, the
``[Updated Information]`` block with one fact ``"{prompt} {new answer}"`` per
line (numbered when there are several), then ``[Question]``. LTE itself always
put its top retrieved fact in context; xke applies the similarity threshold
(``threshold: null`` restores LTE's behaviour).
"""

from __future__ import annotations

from ..prompts import lte_prompt
from .base import register_method
from .context import ContextMethod


@register_method
class LTE(ContextMethod):
    name = "lte"

    def render(self, edits, query) -> str:
        return lte_prompt([(e.prompt, e.target_new) for e in edits], query.prompt)
