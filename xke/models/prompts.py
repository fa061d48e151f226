"""Rendering questions for a model and joining prompts with answers.

A :class:`PromptFormatter` turns a user question into the text a model
reads: the tokenizer's chat template for chat models, a plain ``Q: … A:``
template for base models, or the bare text for cloze prompts. Chat templates
are rendered with ``enable_thinking=False`` unless ``thinking=True`` (Qwen3 and
other templates with a reasoning block would otherwise start every answer
with ``<think>``; templates without that switch ignore it).

:func:`encode_prompt_target` is the single place where a prompt and its
answer are tokenized. It tokenizes the JOINED text (prompt + separator +
answer) and splits it at the prompt, so the target ids are exactly the ids
the model reads after the prompt, whatever the tokenizer family
(SentencePiece would otherwise put a dummy-prefix ``▁`` in front of an answer
tokenized on its own). The separator is never hard-coded:

- after a chat prompt, it is what the chat template itself puts between the
  generation prompt and the assistant's answer (``" "`` for Llama 2 and
  Mistral's published templates, ``""`` for ChatML); where a template puts
  nothing after a non-space marker and the tokenizer is a SentencePiece model
  with a dummy prefix, the answer starts a new SentencePiece segment (``" "``),
  as Meta's and Mistral's reference encoders (mistral-common) do;
- otherwise it depends on the answer's language and on whether the prompt
  already ends with whitespace (:func:`answer_separator`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

from ..data.languages import uses_spaces
from ..errors import ModelError

TemplateMode = Literal["auto", "chat", "plain"]

PLAIN_QA_TEMPLATE = "Q: {question}\nA:"


def chat_kwargs(thinking: bool = False) -> dict:
    """Extra variables every xke chat-template rendering passes (``enable_thinking``; ignored by templates
    without a reasoning switch)."""
    return {"enable_thinking": bool(thinking)}


@dataclass
class PromptFormatter:
    """Render a question for ``tokenizer``'s model.

    ``mode="auto"`` uses the chat template when the tokenizer has one, the
    plain QA template otherwise; ``"chat"`` requires a chat template (clear
    error if missing); ``"plain"`` always uses ``plain_template``.
    ``system`` is an optional system message for chat models; ``thinking``
    turns a template's reasoning mode on (off by default: ``enable_thinking=False``).
    """

    tokenizer: object
    mode: TemplateMode = "auto"
    plain_template: str = PLAIN_QA_TEMPLATE
    system: str | None = None
    thinking: bool = False

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
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                      **chat_kwargs(self.thinking))
        return self.plain_template.format(question=text)


def answer_separator(prompt_text: str, lang: str) -> str:
    """What goes between a plain (non-chat) prompt and its answer: ``" "`` for spaced languages unless
    the prompt already ends in whitespace, ``""`` for zh/ja/th."""
    if not prompt_text or prompt_text[-1].isspace():
        return ""
    return " " if uses_spaces(lang) else ""


# probes for reading a chat template's layout: private-use characters no template rewrites
_PROBE_USER, _PROBE_ANSWER = "\ue000xke-user\ue000", "\ue000xke-answer\ue000"
_TURN_CACHE_ATTR = "_xke_chat_turns"


def chat_turns(tokenizer) -> list[tuple[str, str]]:
    """``(generation_suffix, answer_sep)`` pairs of ``tokenizer``'s chat template, one per thinking setting.

    ``generation_suffix`` is what the template writes after a user message when asked for a generation
    prompt; ``answer_sep`` what it writes between that and the assistant's answer in a full conversation.
    Empty when there is no chat template or it cannot render the probe conversation."""
    tpl = getattr(tokenizer, "chat_template", None)
    if not tpl or not isinstance(tpl, str):
        return []
    cached = getattr(tokenizer, _TURN_CACHE_ATTR, None)
    if cached is not None and cached[0] == tpl:
        return cached[1]
    turns: list[tuple[str, str]] = []
    for thinking in (False, True):
        try:
            gen = tokenizer.apply_chat_template([{"role": "user", "content": _PROBE_USER}], tokenize=False,
                                                add_generation_prompt=True, **chat_kwargs(thinking))
            full = tokenizer.apply_chat_template(
                [{"role": "user", "content": _PROBE_USER}, {"role": "assistant", "content": _PROBE_ANSWER}],
                tokenize=False, continue_final_message=True, **chat_kwargs(thinking))
        except Exception:  # noqa: BLE001 - a template that cannot render the probe: no chat layout known
            continue
        if _PROBE_USER not in gen or _PROBE_ANSWER not in full:
            continue
        g = gen[gen.rindex(_PROBE_USER) + len(_PROBE_USER):]
        m = full[full.rindex(_PROBE_USER) + len(_PROBE_USER):full.rindex(_PROBE_ANSWER)]
        if g and m.startswith(g) and (g, m[len(g):]) not in turns:
            turns.append((g, m[len(g):]))
    turns.sort(key=lambda t: -len(t[0]))  # the longest matching suffix wins
    try:
        setattr(tokenizer, _TURN_CACHE_ATTR, (tpl, turns))
    except AttributeError:
        pass
    return turns


def _sentencepiece_dummy_prefix(tokenizer) -> bool:
    """Whether the tokenizer is a SentencePiece model that prefixes a segment with ``▁``."""
    try:
        toks = tokenizer.convert_ids_to_tokens(tokenizer("a", add_special_tokens=False)["input_ids"])
    except Exception:  # noqa: BLE001
        return False
    return bool(toks) and isinstance(toks[0], str) and toks[0].startswith("\u2581")


def prompt_answer_separator(tokenizer, prompt_text: str, lang: str) -> str:
    """The text between a rendered prompt and its answer (see the module docstring for the rules)."""
    for gen_suffix, sep in chat_turns(tokenizer):
        if prompt_text.endswith(gen_suffix):
            if sep:
                return sep
            if prompt_text[-1:].strip() and _sentencepiece_dummy_prefix(tokenizer):
                return " "
            break
    return answer_separator(prompt_text, lang)


def _special_prefix(tokenizer) -> list[int]:
    """Ids the tokenizer puts before a text when adding special tokens (BOS), never trailing ones (EOS)."""
    body = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    full = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    for k in range(len(full) - len(body) + 1):
        if full[k:k + len(body)] == body:
            return full[:k]
    return []


def encode_prompt_target(tokenizer, prompt_text: str, target: str, lang: str) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of the answer as the model sees them after it.

    The model input is ``prompt_ids + target_ids``: the tokenization of the joined text
    ``prompt + separator + target`` (:func:`prompt_answer_separator`), split where the prompt ends;
    scoring uses ``target_ids``. A BOS is added unless the prompt already holds it (chat templates).
    When the prompt ends in whitespace that the tokenizer attaches to the answer's first word, that
    whitespace goes with the answer. When any other token of the joined text straddles the boundary (a
    cloze prompt in a language without spaces), the answer is tokenized on its own and a warning says so.
    """
    prefix = [] if _starts_with_bos(tokenizer, prompt_text) else _special_prefix(tokenizer)
    p_body = list(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    sep = prompt_answer_separator(tokenizer, prompt_text, lang)
    joined_text = prompt_text + sep + target
    j_body = list(tokenizer(joined_text, add_special_tokens=False)["input_ids"])
    if j_body[:len(p_body)] == p_body:
        return prefix + p_body, j_body[len(p_body):]
    # the prompt's tokens change when the answer follows (e.g. trailing whitespace merges differently):
    # split the joined tokens where a token starts exactly at the end of the prompt text
    k = _token_boundary(tokenizer, joined_text, len(prompt_text))
    if k is not None:
        return prefix + j_body[:k], j_body[k:]
    # a token spans the prompt's last characters and the answer's first (a cloze prompt in a language
    # written without spaces: "…起源于" + "英国" inside one pre-token). No split is the model's view; score
    # the answer's own tokens after the prompt's, without a SentencePiece dummy prefix, and say so.
    warnings.warn(f"{type(tokenizer).__name__}: an answer's first token merges with the end of its prompt in the "
                  "joined text; such answers are scored as their own tokens after the prompt's (end the prompt "
                  "with a space, newline or marker to avoid it)", stacklevel=2)
    t_ids = list(tokenizer(sep + target, add_special_tokens=False)["input_ids"])
    if len(t_ids) > 1 and tokenizer.convert_ids_to_tokens(t_ids[:1]) == ["\u2581"] and not sep:
        t_ids = t_ids[1:]
    return prefix + p_body, t_ids


def _token_boundary(tokenizer, text: str, char_pos: int) -> int | None:
    """Index of the first token of ``text`` that starts at or after ``char_pos``, if no token spans it."""
    try:
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    except (NotImplementedError, TypeError, ValueError, KeyError):
        return None
    for i, (s, e) in enumerate(offsets):
        if s >= char_pos:
            return i
        if e > char_pos:
            # a token spanning the boundary is acceptable only when the prompt's part of it is its
            # trailing whitespace (byte-level BPE attaches a space to the next word): the answer starts there
            return i if not text[s:char_pos].strip() else None
    return len(offsets)


def encode_prompt(tokenizer, prompt_text: str) -> list[int]:
    """Token ids of a rendered prompt alone (for generation): BOS unless the text holds it, never EOS."""
    prefix = [] if _starts_with_bos(tokenizer, prompt_text) else _special_prefix(tokenizer)
    return prefix + list(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])


def _starts_with_bos(tokenizer, text: str) -> bool:
    bos = getattr(tokenizer, "bos_token", None)
    return bool(bos) and text.startswith(bos)
