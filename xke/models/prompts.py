"""Rendering questions for a model and joining prompts with answers.

A :class:`PromptFormatter` turns a user question into the text a model
reads: the tokenizer's chat template for chat models, a plain ``Q: … A:``
template for base models, or the bare text for cloze prompts.

:func:`encode_prompt_target` is the single place where a prompt and its
answer are tokenized. It never hard-codes a space: the separator depends on
the answer's language and on whether the rendered prompt already ends with
whitespace, and the returned target ids are exactly the ids fed to the model
after the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..data.languages import uses_spaces
from ..errors import ModelError

TemplateMode = Literal["auto", "chat", "plain"]

PLAIN_QA_TEMPLATE = "Q: {question}\nA:"


@dataclass
class PromptFormatter:
    """Render a question for ``tokenizer``'s model.

    ``mode="auto"`` uses the chat template when the tokenizer has one, the
    plain QA template otherwise; ``"chat"`` requires a chat template (clear
    error if missing); ``"plain"`` always uses ``plain_template``.
    ``system`` is an optional system message for chat models.
    """

    tokenizer: object
    mode: TemplateMode = "auto"
    plain_template: str = PLAIN_QA_TEMPLATE
    system: str | None = None

    def __post_init__(self):
        if self.mode not in ("auto", "chat", "plain"):
            raise ModelError(f"unknown template mode {self.mode!r}; use auto, chat or plain")
        has_chat = bool(getattr(self.tokenizer, "chat_template", None))
        if self.mode == "chat" and not has_chat:
            name = getattr(self.tokenizer, "name_or_path", "the tokenizer")
            raise ModelError(f"{name} has no chat template (tokenizer_config.json 'chat_template'); "
                             "use template mode 'plain' or add a template")
        self.use_chat = has_chat if self.mode == "auto" else self.mode == "chat"

    def format(self, text: str, style: str = "question") -> str:
        """The full prompt string for a question (or cloze statement) ``text``."""
        if style == "cloze" and not self.use_chat:
            return text
        if self.use_chat:
            messages = ([{"role": "system", "content": self.system}] if self.system else [])
            messages.append({"role": "user", "content": text})
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.plain_template.format(question=text)


def answer_separator(prompt_text: str, lang: str) -> str:
    """What goes between a rendered prompt and its answer: ``" "`` for spaced languages unless
    the prompt already ends in whitespace, ``""`` for zh/ja/th."""
    if not prompt_text or prompt_text[-1].isspace():
        return ""
    return " " if uses_spaces(lang) else ""


def encode_prompt_target(tokenizer, prompt_text: str, target: str, lang: str) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of the answer as the model sees them after it.

    The model input is ``prompt_ids + target_ids``; scoring uses ``target_ids``.
    The prompt is tokenized with the tokenizer's special tokens (BOS) unless it
    already contains them (chat templates); the answer with none.
    """
    add_special = not _starts_with_bos(tokenizer, prompt_text)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=add_special)["input_ids"]
    target_ids = tokenizer(answer_separator(prompt_text, lang) + target, add_special_tokens=False)["input_ids"]
    return list(prompt_ids), list(target_ids)


def encode_prompt(tokenizer, prompt_text: str) -> list[int]:
    """Token ids of a rendered prompt alone (for generation)."""
    return list(tokenizer(prompt_text, add_special_tokens=not _starts_with_bos(tokenizer, prompt_text))["input_ids"])


def _starts_with_bos(tokenizer, text: str) -> bool:
    bos = getattr(tokenizer, "bos_token", None)
    return bool(bos) and text.startswith(bos)
