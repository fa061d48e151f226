"""Sources of edit facts for the XE-IT training data.

Every source turns into a list of :class:`Fact`: one edit seen in one or more
languages (:class:`FactView`), with what the Table 8 layout needs — in-scope
phrasings (answer: the new value), out-of-scope questions of the same subject
(other attributes, answer unchanged) and unrelated questions (answer
unchanged), the original answer when known, and hints for the offline
backend (ground-truth complex queries, long answers).

``SOURCE`` specs (``xke data build-xeit --source``; several may be given):

- ``mzsre:PATH`` — MzsRE/ZsRE training pairs (``train/<lang>.tsv``, line-aligned)
- ``clm:PATH``   — CLM-Bench CounterFact-style rows (Chinese/English/merged files)
- ``jsonl:PATH`` — xke's own edit JSONL (``EditCase.to_dict`` per line)

A source may also be an object made by a provider outside this package (see
:class:`ProvidedSource`): the command line turns ``world:DIR`` / ``world``
(the toy world's TRAIN split) into one, with options from the recipe's
``source_options`` section.

Benchmarks' test sets (Bi-ZsRE, MzsRE test) are refused: training on them
leaks the evaluation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

from ..data.languages import parse_langs
from ..data.schema import EditCase, EditText
from ..errors import ConfigError, DataError


@dataclass
class FactView(EditText):
    """One language's view of a fact for training-data construction: the edit (:class:`EditText`) and
    the questions the XE-IT rows ask around it."""

    #: other phrasings of the edit question (answer: target_new)
    queries: list[str] = field(default_factory=list)
    #: derived questions whose answer follows from the edit, with that answer
    portability: list[tuple[str, str]] = field(default_factory=list)
    #: the same subject's other attributes: (question, unchanged answer)
    same_subject: list[tuple[str, str]] = field(default_factory=list)
    #: unrelated questions: (question, answer)
    unrelated: list[tuple[str, str]] = field(default_factory=list)
    #: ground truth for the offline backend (complex_queries, long_answer, out_of_scope)
    hints: dict[str, Any] = field(default_factory=dict)
    style: str = "question"


@dataclass
class Fact:
    """One edit in several languages, from one source."""

    fact_id: str
    source: str
    views: dict[str, FactView]
    meta: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- from EditCase


def facts_from_cases(cases: Iterable[EditCase], source: str, *, use_paraphrases: bool = True) -> list[Fact]:
    """Facts from xke edit cases (any loader's output)."""
    out = []
    for c in cases:
        views = {}
        for lang, v in c.views.items():
            fv = FactView(subject=v.subject, prompt=v.prompt, target_new=v.target_new, target_old=v.target_old,
                          queries=list(v.paraphrases) if use_paraphrases else [], style=v.style)
            if v.locality_prompt and v.locality_answer:
                fv.unrelated.append((v.locality_prompt, v.locality_answer))
            if v.portability_prompt and v.portability_answer:
                fv.portability.append((v.portability_prompt, v.portability_answer))
            views[lang] = fv
        out.append(Fact(fact_id=f"{source}:{c.case_id}", source=source, views=views, meta=dict(c.meta)))
    return out


def _borrow_unrelated(facts: list[Fact], seed: int, k: int = 1) -> None:
    """Give facts without an unrelated question another fact's edit question + answer (same language).

    The borrowed answer is the OTHER fact's original answer when known, else its
    (true, for ZsRE-style pairs) answer."""
    if len(facts) < 2:
        return
    rng = random.Random(seed)
    n = len(facts)
    for i, f in enumerate(facts):
        for lang, v in f.views.items():
            if v.unrelated:
                continue
            for _ in range(k):
                j = (i + 1 + rng.randrange(n - 1)) % n
                ov = facts[j].views.get(lang)
                if ov is None or ov.prompt == v.prompt or (v.subject and ov.subject == v.subject):
                    continue
                ans = ov.target_old if ov.target_old else ov.target_new
                v.unrelated.append((ov.prompt, ans))


def _borrow_same_subject(facts: list[Fact]) -> None:
    """Give views without same-subject questions the other facts' edit questions about the same subject
    (same language, exact subject): out-of-scope rows that need no LLM. The answer is the other fact's
    original answer when known, else its answer (ZsRE-style pairs hold true answers)."""
    by_subject: dict[tuple[str, str], list[FactView]] = {}
    for f in facts:
        for lang, v in f.views.items():
            if v.subject:
                by_subject.setdefault((lang, v.subject), []).append(v)
    for views in by_subject.values():
        for v in views:
            if v.same_subject:
                continue
            v.same_subject = [(o.prompt, o.target_old or o.target_new) for o in views
                              if o is not v and o.prompt != v.prompt and (o.target_old or o.target_new)][:4]


# ----------------------------------------------------------------------------- sources


def mzsre_train_facts(path: str | Path, langs: Sequence[str] | None = None, *, limit: int | None = None,
                      seed: int = 0) -> list[Fact]:
    """MzsRE/ZsRE training pairs as facts (the pair's answer is the edit's new answer).

    These pairs carry no original answer, so they feed the with-descriptor
    in-scope samples and (as unrelated questions of each other) the
    out-of-scope ones.
    """
    from ..data.loaders import load_mzsre_train

    tp = load_mzsre_train(path, langs)
    facts = []
    for k, line in enumerate(tp.lines):
        if limit is not None and k >= limit:
            break
        views = {}
        for lang, pairs in tp.pairs.items():
            q, a = pairs[k]
            views[lang] = FactView(subject="", prompt=q, target_new=a)
        facts.append(Fact(fact_id=f"mzsre-train:{line}", source="mzsre-train", views=views,
                          meta={"line": line}))
    _borrow_unrelated(facts, seed)
    return facts


def clm_facts(path: str | Path, langs: Sequence[str] | None = None, *, limit: int | None = None) -> list[Fact]:
    """CLM-Bench CounterFact-style rows (cloze prompts, ground truth as the original answer)."""
    from ..data.loaders import load_clm

    facts = facts_from_cases(load_clm(path, langs, limit=limit), "clm")
    _borrow_same_subject(facts)
    return facts


def jsonl_facts(path: str | Path, langs: Sequence[str] | None = None, *, limit: int | None = None,
                seed: int = 0) -> list[Fact]:
    """xke edit JSONL. Cases marked ``meta.split == "heldout"`` are skipped."""
    from ..data.loaders import read_jsonl

    cases = [c for c in read_jsonl(path, langs, limit=limit) if c.meta.get("split") != "heldout"]
    facts = facts_from_cases(cases, "jsonl")
    _borrow_unrelated(facts, seed)
    _borrow_same_subject(facts)
    return facts


# ----------------------------------------------------------------------------- spec parsing


@runtime_checkable
class ProvidedSource(Protocol):
    """An XE-IT source object made by a provider (e.g. the toy world's): ``str()`` gives the spec the user
    wrote; ``options`` is the provider's section of the recipe's ``source_options`` (``kind`` names it)."""

    kind: str

    def facts(self, langs: Sequence[str] | None, *, limit: int | None, seed: int,
              options: dict[str, Any] | None = None) -> list[Fact]:
        """The source's facts."""

    def extras(self, langs: Sequence[str], *, seed: int, options: dict[str, Any] | None = None
               ) -> tuple[list[Fact], list[dict[str, Any]]]:
        """Facts and ready-made rows added after every source's facts."""


def load_source(spec: str, langs: Sequence[str] | None = None, *, limit: int | None = None,
                seed: int = 0) -> list[Fact]:
    """Facts from one ``KIND:PATH`` spec (see module docstring)."""
    langs = parse_langs(langs) if langs else None
    kind, _, path = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "world":
        raise ConfigError(f"source {spec!r}: toy-world sources are made by the world's provider (the xke "
                          "command line does it for --source; in Python pass a WorldSource from the world package)")
    if kind == "bizsre":
        raise ConfigError("Bi-ZsRE is a test set only; training on it leaks the evaluation")
    if not path:
        raise ConfigError(f"source {spec!r}: expected KIND:PATH (mzsre:PATH, clm:PATH, jsonl:PATH, world:DIR)")
    if kind not in ("mzsre", "zsre", "mzsre-train", "clm", "counterfact", "jsonl"):
        raise ConfigError(f"unknown source kind {kind!r} in {spec!r}; use mzsre:PATH, clm:PATH, jsonl:PATH, "
                          "world:DIR")
    if not Path(path).exists():
        raise DataError(f"source {spec!r}: {path} does not exist")
    if kind in ("mzsre", "zsre", "mzsre-train"):
        p = Path(path)
        if p.is_dir() and (p / "test").is_dir() and not (p / "train").is_dir():
            raise ConfigError(f"{p}: no train/ folder; X-KDE trains on MzsRE TRAIN pairs only")
        if p.name == "test" or (p.is_file() and p.suffix == ".json"):
            raise ConfigError(f"source {spec!r} is a TEST set; training on it leaks the evaluation "
                              "(use the train/ TSVs)")
        return mzsre_train_facts(path, langs, limit=limit, seed=seed)
    if kind in ("clm", "counterfact"):
        return clm_facts(path, langs, limit=limit)
    if kind == "jsonl":
        return jsonl_facts(path, langs, limit=limit, seed=seed)
    raise ConfigError(f"unknown source kind {kind!r} in {spec!r}; use mzsre:PATH, clm:PATH, jsonl:PATH, world:DIR")


def load_sources(specs: Sequence[str | ProvidedSource], langs: Sequence[str] | None = None, *,
                 limit: int | None = None, seed: int = 0,
                 options: dict[str, dict[str, Any]] | None = None) -> list[Fact]:
    """Facts of every source in order (spec strings, or provider-made sources with their ``options`` section)."""
    facts: list[Fact] = []
    for s in specs:
        if isinstance(s, ProvidedSource):
            facts.extend(s.facts(parse_langs(langs) if langs else None, limit=limit, seed=seed,
                                 options=(options or {}).get(s.kind)))
        else:
            facts.extend(load_source(s, langs, limit=limit, seed=seed))
    return facts


def xeit_inputs(specs: Sequence[str | ProvidedSource], data_cfg, *, limit: int | None = None,
                options: dict[str, dict[str, Any]] | None = None) -> tuple[list[Fact], list[dict[str, Any]]]:
    """The facts of ``specs`` for XE-IT data construction and the extra rows: every source's facts, then what
    provider-made sources add (their ``extras``, e.g. the toy world's replay rows and invented-people facts,
    as their ``options`` section asks): what ``xke data build-xeit`` and the recipe build from."""
    facts = load_sources(specs, data_cfg.langs, limit=limit, seed=data_cfg.seed, options=options)
    extra: list[dict[str, Any]] = []
    for s in specs:
        if isinstance(s, ProvidedSource):
            more, rows = s.extras(data_cfg.langs, seed=data_cfg.seed, options=(options or {}).get(s.kind))
            extra += rows
            facts += more
    return facts, extra
