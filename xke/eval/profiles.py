"""Evaluation profiles: which reference's definitions ``xke eval`` follows (docs/profiles.md).

A profile fixes everything that makes two "locality" or "F1" numbers different
quantities:

- the prompt: xke's (the tokenizer's chat template or ``Q: … A:``), the released
  X-KDE ``eval.py``'s literal strings (ChatML with a system prompt for every model
  except Llama-2, which gets ``' [INST] {x} [/INST] {target}'``), or the bare
  question followed by ``" " + target`` (EasyEdit, Bi-ZsRE);
- the locality reference: the model's own greedy pre-edit answer (xke) or the
  dataset's ``loc_ans`` forced after the question (the releases);
- the ``nq question: `` prefix of locality questions: stripped (xke) or kept;
- stripping of edit descriptors (``src + " " + alt`` verbatim in the release);
- whether greedy answers are generated (``f1``/``em`` of generated answers).

Metric names never mean two things (see :data:`METRIC_DEFINITIONS`): ``f1``/``em``
score a generated answer; ``tf_f1``/``tf_em`` the decoded teacher-forced argmax
(Bi-ZsRE's script, the X-KDE paper's F1); locality against the model's own answer
is ``tf_acc``/``tf_f1``/``tf_em``, against the dataset's ``loc_ans`` it is
``loc_acc``/``loc_f1``/``loc_em``.

:func:`encoder_for` returns how a (rendered prompt, answer) pair is tokenized:
``(prompt_ids, fed_ids, compare_ids)``; the model reads ``prompt_ids + fed_ids``,
the argmax at the positions predicting ``fed_ids`` is compared with
``compare_ids`` (the same ids, except in the release, which compares with the
answer tokenized on its own, as ``eval.py`` does).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Literal

from ..errors import ConfigError

RELEASE_SYSTEM_PROMPT = "You are a helpful assistant."
CHATML = ("<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n"
          "<|im_start|>assistant\n")
CHATML_END = "<|im_end|>"
LLAMA2 = " [INST] {text} [/INST]"

PromptKind = Literal["xke", "release", "bare"]


@dataclass(frozen=True)
class EvalProfile:
    """One evaluation profile (see the module docstring and docs/profiles.md)."""

    name: str
    #: the code whose definitions this profile follows
    reference: str
    prompt: PromptKind
    #: ``own``: force the model's greedy pre-edit answer; ``dataset``: force the dataset's ``loc_ans``
    locality: Literal["own", "dataset"]
    keep_nq_prefix: bool
    #: strip edit descriptors and answers (xke) or use the dataset's strings verbatim
    strip: bool
    #: generate greedy answers (``f1``/``em``)
    generate: bool
    #: default system prompt (``--system-prompt`` overrides)
    system_prompt: str | None = None
    #: decode argmax ids with ``skip_special_tokens`` (Bi-ZsRE) or not (the X-KDE release)
    skip_special: bool = True


PROFILES: dict[str, EvalProfile] = {
    "xke": EvalProfile("xke", "xke's own definitions (docs/profiles.md)", prompt="xke", locality="own",
                       keep_nq_prefix=False, strip=True, generate=True),
    "xkde-release": EvalProfile("xkde-release", "YukinoshitaKaren/X_KDE eval/eval.py", prompt="release",
                                locality="dataset", keep_nq_prefix=True, strip=False, generate=False,
                                system_prompt=RELEASE_SYSTEM_PROMPT, skip_special=False),
    "bizsre": EvalProfile("bizsre", "krystalan/Bi_ZsRE evaluate.py + easyeditor/evaluate", prompt="bare",
                          locality="dataset", keep_nq_prefix=True, strip=False, generate=False),
    "easyedit": EvalProfile("easyedit", "zjunlp/EasyEdit evaluate (rewrite_acc, locality)", prompt="bare",
                            locality="dataset", keep_nq_prefix=True, strip=False, generate=False),
}

#: metric key -> what it is (written to metrics.json so a number is never read as another quantity)
METRIC_DEFINITIONS: dict[str, str] = {
    "tf_acc": "teacher-forced token accuracy of the answer; locality: post- vs pre-edit argmax agreement while "
              "forcing the model's own greedy pre-edit answer",
    "tf_f1": "token F1 of the decoded teacher-forced argmax vs the decoded answer (no stripping); locality: "
             "post vs pre decoded argmax, forcing the model's own pre-edit answer",
    "tf_em": "exact match of the decoded teacher-forced argmax and the decoded answer (no stripping)",
    "f1": "token F1 of the generated greedy answer vs the answer (stripped); locality: vs the pre-edit answer",
    "em": "exact match of the generated greedy answer (stripped)",
    "loc_acc": "locality: post- vs pre-edit argmax agreement while forcing the dataset's loc_ans",
    "loc_f1": "locality: token F1 of the decoded post- vs pre-edit argmax while forcing the dataset's loc_ans",
    "loc_em": "locality: exact match of the decoded post- and pre-edit argmax while forcing the dataset's loc_ans",
}


def get_profile(name: str) -> EvalProfile:
    """The profile called ``name``; a clear error listing the known ones."""
    p = PROFILES.get(str(name).strip().lower())
    if p is None:
        raise ConfigError(f"unknown evaluation profile {name!r}; use one of {', '.join(PROFILES)}")
    return p


# ------------------------------------------------------------------------------- prompt formats
def is_llama2(model_name: str, tokenizer) -> bool:
    """Whether the release would use its Llama-2 format: ``llama2``/``llama-2`` in the model path, or a
    chat template written in ``[INST]`` style."""
    n = str(model_name).lower().replace("_", "-")
    if "llama2" in n or "llama-2" in n:
        return True
    return "[INST]" in str(getattr(tokenizer, "chat_template", "") or "")


class ReleaseFormatter:
    """The released X-KDE ``eval.py``'s prompt strings (a drop-in for :class:`~xke.models.prompts.PromptFormatter`).

    ``chatml``: ``<|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{x}<|im_end|>\\n<|im_start|>
    assistant\\n``, then ``{target}<|im_end|>``; ``llama2``: ``' [INST] {x} [/INST]'`` then ``' ' + target``.
    """

    def __init__(self, tokenizer, style: Literal["chatml", "llama2"], system: str | None = RELEASE_SYSTEM_PROMPT):
        self.tokenizer = tokenizer
        self.style = style
        self.system = RELEASE_SYSTEM_PROMPT if system is None else system
        self.use_chat = True
        if style == "chatml":
            vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
            if "<|im_start|>" not in vocab or CHATML_END not in vocab:
                warnings.warn("profile xkde-release: the tokenizer has no <|im_start|>/<|im_end|> tokens, but the "
                              "release feeds ChatML to every model except Llama-2", stacklevel=2)

    def format(self, text: str, style: str = "question") -> str:
        """The prompt part of the release's string for user message ``text``."""
        if self.style == "llama2":
            return LLAMA2.format(text=text)
        return CHATML.format(system=self.system, text=text)


class BareFormatter:
    """The bare question (EasyEdit, Bi-ZsRE): the model reads ``question + " " + answer``."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.use_chat = False
        self.system = None

    def format(self, text: str, style: str = "question") -> str:
        return text


def make_formatter(profile: EvalProfile, tokenizer, *, template: str = "auto", system_prompt: str | None = None,
                   model_name: str = "", thinking: bool = False):
    """The prompt formatter of ``profile`` for ``tokenizer`` (``system_prompt`` overrides the profile's;
    ``thinking``: a chat template's reasoning mode, off by default)."""
    from ..models.prompts import PromptFormatter

    system = system_prompt if system_prompt is not None else profile.system_prompt
    if profile.prompt == "release":
        return ReleaseFormatter(tokenizer, "llama2" if is_llama2(model_name, tokenizer) else "chatml", system)
    if profile.prompt == "bare":
        return BareFormatter(tokenizer)
    return PromptFormatter(tokenizer, mode=template, system=system, thinking=thinking)


# ------------------------------------------------------------------------------- tokenization
Encoded = tuple[list[int], list[int], list[int]]


def _ids(tok, text: str, special: bool = True) -> list[int]:
    return list(tok(text, add_special_tokens=special)["input_ids"])


def encoder_for(formatter) -> Callable[[object, str, str, str], Encoded]:
    """``encode(tokenizer, prompt_text, target, lang) -> (prompt_ids, fed_ids, compare_ids)`` for a formatter."""
    if isinstance(formatter, ReleaseFormatter):
        return encode_release_llama2 if formatter.style == "llama2" else encode_release_chatml
    if isinstance(formatter, BareFormatter):
        return encode_bare
    return encode_xke


def encode_xke(tok, prompt_text: str, target: str, lang: str) -> Encoded:
    """xke: :func:`~xke.models.prompts.encode_prompt_target` (language-aware separator); compared = fed."""
    from ..models.prompts import encode_prompt_target

    p, t = encode_prompt_target(tok, prompt_text, target, lang)
    return p, t, t


def encode_bare(tok, prompt_text: str, target: str, lang: str) -> Encoded:
    """EasyEdit / Bi-ZsRE: ``tok(prompt + " " + target)``; the answer is what follows ``len(tok(prompt))``."""
    full = _ids(tok, f"{prompt_text} {target}")
    n = len(_ids(tok, prompt_text))
    return full[:n], full[n:], full[n:]


def encode_release_chatml(tok, prompt_text: str, target: str, lang: str) -> Encoded:
    """Released ``eval.py`` (ChatML): the model reads ``tok(prompt + target + "<|im_end|>")``; the argmax at
    ``[-(T+2):-2]`` is compared with ``tok(target)`` (T tokens, tokenized on its own)."""
    full = _ids(tok, prompt_text + target + CHATML_END)
    tgt = _ids(tok, target)
    T = len(tgt)
    if len(full) < T + 2:
        raise ConfigError(f"profile xkde-release: prompt too short for a {T}-token answer")
    L = len(full)
    return full[:L - T - 1], full[L - T - 1:L - 1], tgt


def encode_release_llama2(tok, prompt_text: str, target: str, lang: str) -> Encoded:
    """Released ``eval.py`` (Llama-2): the model reads ``tok(prompt + " " + target)``; with T = len(tok(target))
    (BOS included) the argmax at ``[-T:-1]`` is compared with ``tok(target)[1:]``."""
    full = _ids(tok, f"{prompt_text} {target}")
    tgt = _ids(tok, target)
    T = len(tgt)
    L = len(full)
    return full[:L - T + 1], full[L - T + 1:], tgt[1:]
