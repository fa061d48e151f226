"""X-KDE inference: the edit descriptor in X-KDE's prompt, answered in the query's language.

:func:`xkde_prompt` is the one place the X-KDE prompt is written; the X-KDE
training data (``xke.train``) imports it so training and inference read the
very same text::

    Please acknowledge the updated information provided below and respond to the
    subsequent query in {Language}.

    [Updated Information]:
    {source question} {source new answer}

    [Query]:
    {question}

The method renders that user message through the model's chat template
(``self.formatter``). In ``gold`` mode the case's own edit is in context (the
released X-KDE evaluation); in ``retrieve`` mode the descriptors come from the
edit memory.
"""

from __future__ import annotations

from typing import Sequence

from ..data.languages import language_name

XKDE_INSTRUCTION = ("Please acknowledge the updated information provided below and respond to the "
                    "subsequent query in {language}.")


def format_descriptor(prompt: str, target_new: str, verbatim: bool = False) -> str:
    """One edit descriptor as X-KDE writes it: ``"{question} {new answer}"`` (``verbatim``: the strings as
    the dataset spells them, surrounding spaces included, as the released ``eval.py`` joins them)."""
    if verbatim:
        return f"{prompt} {target_new}"
    return f"{prompt.rstrip()} {target_new.strip()}"


def format_facts(descriptors: Sequence[tuple[str, str]], verbatim: bool = False) -> str:
    """Descriptors one per line; numbered ``"1. …"`` when there are several."""
    lines = [format_descriptor(p, t, verbatim) for p, t in descriptors]
    if len(lines) == 1:
        return lines[0]
    return "\n".join(f"{i}. {line}" for i, line in enumerate(lines, 1))


def xkde_prompt(descriptors: Sequence[tuple[str, str]], query_text: str, lang: str, verbatim: bool = False) -> str:
    """The X-KDE user message for ``query_text`` in language ``lang`` with edit ``descriptors``.

    ``descriptors`` is a list of ``(prompt, target_new)`` pairs (source-language
    edits). With no descriptor the message is the bare question (what the
    model reads when retrieval finds nothing, and the "without descriptor"
    training samples). The result is the user-message text; render it with
    the model's chat template (:class:`xke.models.prompts.PromptFormatter`). ``verbatim`` keeps the
    descriptors' surrounding whitespace (evaluation profile ``xkde-release``).
    """
    descriptors = [(str(p), str(t)) for p, t in descriptors]
    if not descriptors:
        return query_text
    instruction = XKDE_INSTRUCTION.format(language=language_name(lang))
    return (f"{instruction}\n\n[Updated Information]:\n{format_facts(descriptors, verbatim)}\n\n"
            f"[Query]:\n{query_text}")


# --- the method ---------------------------------------------------------------------------
from dataclasses import dataclass  # noqa: E402

from .base import register_method  # noqa: E402
from .context import ContextConfig, ContextMethod  # noqa: E402


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
