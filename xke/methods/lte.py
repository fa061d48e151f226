"""LTE (Learning to Edit) inference: edits as "updated information" before the question.

LTE's prompt::

    Please acknowledge the updated information provided below and respond to the
    subsequent question.

    [Updated Information]:
    {facts}

    [Question]:
    {question}

with one fact ``"{prompt} {new answer}"`` per line, numbered ``"1. …"`` when
there are several. LTE itself always put its top retrieved fact in context;
xke applies the similarity threshold (``threshold: null`` restores LTE's
behaviour).
"""

from __future__ import annotations

from typing import Sequence

from .base import register_method
from .context import ContextMethod
from .xkde import format_facts

LTE_INSTRUCTION = ("Please acknowledge the updated information provided below and respond to the "
                   "subsequent question.")


def lte_prompt(descriptors: Sequence[tuple[str, str]], question: str) -> str:
    """The LTE user message; the bare question when there is no descriptor."""
    descriptors = list(descriptors)
    if not descriptors:
        return question
    return f"{LTE_INSTRUCTION}\n\n[Updated Information]:\n{format_facts(descriptors)}\n\n[Question]:\n{question}"


@register_method
class LTE(ContextMethod):
    name = "lte"

    def render(self, edits, query) -> str:
        return lte_prompt([(e.prompt, e.target_new) for e in edits], query.prompt)
