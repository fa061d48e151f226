"""The edit-in-context prompts: X-KDE's, LTE's and IKE's, written once.

Methods (``xke.methods.xkde``/``lte``/``ike``) and training (``xke.train.xeit_data``, the recipe's model card)
import these functions, so training and inference read the very same text. Each returns the user-message text;
the model's chat template is applied afterwards (:class:`xke.models.prompts.PromptFormatter`).

X-KDE (:func:`xkde_prompt`)::

    Please acknowledge the updated information provided below and respond to the
    subsequent query in {Language}.

    [Updated Information]:
    {source question} {source new answer}

    [Query]:
    {question}

LTE (:func:`lte_prompt`): the same layout with LTE's instruction ("… respond to the subsequent question.")
and ``[Question]:`` for ``[Query]:``. Several descriptors go one per line, numbered ``"1. …"``.

IKE (:func:`ike_prompt`): demonstrations ``"New Fact: {p} {t}\\nPrompt: {p'} {t'}"`` separated by blank
lines, then ``"New Fact: {source prompt} {source new answer}\\nPrompt: {query}"``.
"""

from __future__ import annotations

from typing import Sequence

from .data.languages import language_name, uses_spaces

XKDE_INSTRUCTION = ("Please acknowledge the updated information provided below and respond to the "
                    "subsequent query in {language}.")
LTE_INSTRUCTION = ("Please acknowledge the updated information provided below and respond to the "
                   "subsequent question.")


#: the header of the descriptor block in X-KDE's and LTE's prompts (a user message holding it has edits in context)
UPDATED_INFORMATION = "[Updated Information]"


def _updated_information(instruction: str, facts: str, query_header: str, query: str) -> str:
    """The layout X-KDE and LTE share: instruction, ``[Updated Information]`` block, then the query block."""
    return f"{instruction}\n\n{UPDATED_INFORMATION}:\n{facts}\n\n[{query_header}]:\n{query}"


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
    training samples). ``verbatim`` keeps the descriptors' surrounding whitespace
    (evaluation profile ``xkde-release``).
    """
    descriptors = [(str(p), str(t)) for p, t in descriptors]
    if not descriptors:
        return query_text
    return _updated_information(XKDE_INSTRUCTION.format(language=language_name(lang)),
                                format_facts(descriptors, verbatim), "Query", query_text)


#: the X-KDE prompt with its placeholders, for documents (model cards)
XKDE_TEMPLATE = _updated_information(XKDE_INSTRUCTION.format(language="{Language}"),
                                     "{source question} {source new answer}", "Query", "{question}")


def lte_prompt(descriptors: Sequence[tuple[str, str]], question: str) -> str:
    """The LTE user message; the bare question when there is no descriptor."""
    descriptors = list(descriptors)
    if not descriptors:
        return question
    return _updated_information(LTE_INSTRUCTION, format_facts(descriptors), "Question", question)


def ike_fact(prompt: str, target: str, lang: str) -> str:
    """``prompt`` and its answer as one IKE line: a space between them in spaced languages, none in zh/ja/th."""
    return prompt.rstrip() + (" " if uses_spaces(lang) else "") + target.strip()


def ike_demonstration(fact: str, prompt_line: str) -> str:
    """One IKE demonstration: ``"New Fact: {fact}\\nPrompt: {prompt_line}"`` (both from :func:`ike_fact`)."""
    return f"New Fact: {fact}\nPrompt: {prompt_line}"


def ike_prompt(demonstrations: Sequence[str], facts: Sequence[str], query: str) -> str:
    """The IKE user message: the demonstrations, then one ``New Fact:`` line per fact and the query."""
    new_facts = "\n".join(f"New Fact: {f}" for f in facts)
    return "\n\n".join([*demonstrations, f"{new_facts}\nPrompt: {query}"])
