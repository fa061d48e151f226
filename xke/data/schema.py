"""The one schema every part of xke uses for edits.

One family of records, each built on :class:`EditText` (what an edit says: ``prompt`` about ``subject``
answers ``target_new`` instead of ``target_old``) or converted to and from :class:`EditRequest` explicitly:

- :class:`EditCase` is one fact edit seen in several languages; each language has a :class:`LangView`
  (an :class:`EditText` with its evaluation questions). Loaders produce cases; nothing downstream reads
  benchmark files directly.
- :class:`EditRequest` is one edit handed to a method (:meth:`EditCase.request`); it is also what the
  in-context methods put in their prompts.
- :class:`xke.memory.store.MemoryEdit` is an edit as the edit memory stores it
  (:meth:`~xke.memory.store.MemoryEdit.from_request` / :meth:`~xke.memory.store.MemoryEdit.to_request`).
- :class:`xke.train.sources.FactView` is an :class:`EditText` with what the XE-IT training data needs.
- :class:`Query` is one evaluation question the runner asks.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

from ..errors import DataError
from .languages import normalize_lang

PromptStyle = Literal["question", "cloze"]
QUERY_KINDS: tuple[str, ...] = ("reliability", "generality", "locality", "portability")


@dataclass
class EditText:
    """What an edit says, in one language: ``prompt`` (about ``subject``) should answer ``target_new``;
    ``target_old`` is the original answer when known. The base of :class:`LangView` and of the training
    data's :class:`xke.train.sources.FactView`."""

    subject: str
    prompt: str
    target_new: str
    target_old: str | None = None


@dataclass
class LangView(EditText):
    """One language's rendering of an edit.

    ``prompt`` is the edit prompt (a question, or a cloze statement when
    ``style == "cloze"``); ``target_new`` the new answer; ``target_old`` the
    original answer when known. ``paraphrases`` test generality,
    ``locality_prompt``/``locality_answer`` an unrelated fact (the answer is the
    dataset's reference; metrics compare against the model's own pre-edit
    answer), ``portability_prompt``/``portability_answer`` a question whose
    answer follows from the edit.
    """

    paraphrases: list[str] = field(default_factory=list)
    locality_prompt: str | None = None
    locality_answer: str | None = None
    portability_prompt: str | None = None
    portability_answer: str | None = None
    style: PromptStyle = "question"
    #: what the loader removed from the front of ``locality_prompt`` (Bi-ZsRE's ``"nq question: "``); profiles
    #: that follow the releases put it back
    locality_prefix: str = ""
    #: further locality / portability questions (KnowEdit records hold several): ``[question, answer]`` pairs
    extra_locality: list[list[str]] = field(default_factory=list)
    extra_portability: list[list[str]] = field(default_factory=list)


@dataclass
class Provenance:
    """Where a case came from: file and 0-based record index (or 1-based line for JSONL)."""

    file: str
    row: int


@dataclass
class EditCase:
    """One fact edit in several languages, keyed by xke language code."""

    case_id: str
    views: dict[str, LangView]
    provenance: Provenance | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def languages(self) -> list[str]:
        return list(self.views)

    def view(self, lang: str) -> LangView:
        """The view in ``lang``; a clear error if the case lacks it."""
        lang = normalize_lang(lang)
        if lang not in self.views:
            where = f" ({self.provenance.file}, record {self.provenance.row})" if self.provenance else ""
            raise DataError(f"case {self.case_id!r}{where} has no '{lang}' view; it has {self.languages}")
        return self.views[lang]

    def fact_keys(self) -> set[str]:
        """Keys naming the fact this case edits: ``fact:<subject_id>/<relation>`` when ``meta`` has both,
        and every language's edit prompt and paraphrases (``q:<text>``)."""
        keys = {f"q:{t.strip()}" for v in self.views.values() for t in [v.prompt, *v.paraphrases]}
        if self.meta.get("subject_id") and self.meta.get("relation"):
            keys.add(f"fact:{self.meta['subject_id']}/{self.meta['relation']}")
        return keys

    def locality_keys(self) -> set[str]:
        """Keys naming the fact the locality questions ask about (``meta['locality_subject_id']`` with the
        case's relation, and every language's locality prompt), to compare with :meth:`fact_keys`."""
        keys = {f"q:{v.locality_prompt.strip()}" for v in self.views.values() if v.locality_prompt}
        keys |= {f"q:{q.strip()}" for v in self.views.values() for q, _ in v.extra_locality}
        if self.meta.get("locality_subject_id") and self.meta.get("relation"):
            keys.add(f"fact:{self.meta['locality_subject_id']}/{self.meta['relation']}")
        return keys

    def request(self, lang: str) -> "EditRequest":
        """The edit request for editing in ``lang``."""
        v = self.view(lang)
        return EditRequest.of(v, case_id=self.case_id, lang=normalize_lang(lang), style=v.style)

    def queries(self, lang: str) -> list["Query"]:
        """All evaluation queries of this case in test language ``lang``."""
        v = self.view(lang)
        lang = normalize_lang(lang)
        out = [Query(self.case_id, lang, "reliability", v.prompt, v.target_new, style=v.style)]
        out += [Query(self.case_id, lang, "generality", p, v.target_new, style=v.style, index=i)
                for i, p in enumerate(v.paraphrases)]
        if v.locality_prompt:
            out.append(Query(self.case_id, lang, "locality", v.locality_prompt, v.locality_answer or "",
                             style="question", prefix=v.locality_prefix))
        out += [Query(self.case_id, lang, "locality", q, a, style="question", index=i)
                for i, (q, a) in enumerate(v.extra_locality, start=1 if v.locality_prompt else 0)]
        if v.portability_prompt and v.portability_answer:
            out.append(Query(self.case_id, lang, "portability", v.portability_prompt, v.portability_answer,
                             style="question"))
        out += [Query(self.case_id, lang, "portability", q, a, style="question", index=i)
                for i, (q, a) in enumerate(v.extra_portability,
                                           start=1 if v.portability_prompt and v.portability_answer else 0)]
        return out

    # --- xke's own JSONL format -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"case_id": self.case_id,
                             "views": {k: _view_to_dict(v) for k, v in self.views.items()}}
        if self.meta:
            d["meta"] = self.meta
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


def _view_to_dict(v: LangView) -> dict[str, Any]:
    d = dataclasses.asdict(v)
    return {k: val for k, val in d.items() if val not in (None, []) and not (k == "locality_prefix" and val == "")}


@dataclass(frozen=True)
class EditRequest:
    """One edit handed to a method: make ``prompt`` (about ``subject``) answer ``target_new``."""

    case_id: str
    lang: str
    prompt: str
    target_new: str
    subject: str
    target_old: str | None = None
    style: PromptStyle = "question"

    @classmethod
    def of(cls, text: EditText, *, case_id: str, lang: str, style: PromptStyle = "question") -> "EditRequest":
        """The request that makes ``text`` true, for case ``case_id`` in language ``lang``."""
        return cls(case_id=case_id, lang=lang, prompt=text.prompt, target_new=text.target_new,
                   subject=text.subject, target_old=text.target_old, style=style)


@dataclass(frozen=True)
class Query:
    """One evaluation question: ``prompt`` in language ``lang`` whose reference answer is ``target``.

    For locality the reference used by metrics is the model's pre-edit answer;
    ``target`` holds the dataset's answer for the record only.
    """

    case_id: str
    lang: str
    kind: str
    prompt: str
    target: str
    style: PromptStyle = "question"
    index: int = 0
    #: text the loader removed from the front of ``prompt`` (``"nq question: "``); see :attr:`LangView.locality_prefix`
    prefix: str = ""

    @property
    def key(self) -> str:
        return f"{self.case_id}|{self.lang}|{self.kind}|{self.index}"


def cases_languages(cases: Iterable[EditCase]) -> dict[str, int]:
    """Count of cases per language."""
    counts: dict[str, int] = {}
    for c in cases:
        for lang in c.views:
            counts[lang] = counts.get(lang, 0) + 1
    return counts


#: characters that print as nothing (a target made only of these is empty)
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"
_ZW_TABLE = {ord(c): None for c in ZERO_WIDTH}


def text_problem(s: str) -> str | None:
    """Why ``s`` is not usable text (a NUL character, or a lone surrogate that is not valid Unicode and
    cannot be encoded as UTF-8), or ``None`` when it is fine."""
    if "\x00" in s:
        return f"contains a NUL character (at character {s.index(chr(0))})"
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"contains a lone surrogate {s[e.start]!r} at character {e.start} (not valid Unicode text)"
    return None


def is_blank(s: str) -> bool:
    """True when ``s`` shows nothing: only whitespace and zero-width characters (:data:`ZERO_WIDTH`)."""
    return not s.translate(_ZW_TABLE).strip()
