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
- ``world:DIR`` / ``world`` — the toy world's counterfactual cases of the
  TRAIN split only (held-out entities never enter training data)

Benchmarks' test sets (Bi-ZsRE, MzsRE test) are refused: training on them
leaks the evaluation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

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
    #: other subjects with the same relation: (their name, their unchanged answer); XE-IT's contrast rows
    #: ask an in-scope query with the subject's name replaced by theirs (a minimal pair)
    neighbours: list[tuple[str, str]] = field(default_factory=list)
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


def world_facts(world_dir: str | Path | None, langs: Sequence[str] | None = None, *,
                limit: int | None = None, seed: int = 0, all_relations: bool = False,
                edits_per_fact: int = 1) -> list[Fact]:
    """The toy world's counterfactual cases of the TRAIN split, with ground-truth extras.

    - in-scope phrasings: the world's question templates for the relation
      (training templates only when the world separates them; the cases'
      paraphrases use held-out templates and are not used);
    - same-subject out-of-scope: every other relation of the subject with its
      true answer (``World.subject_relations``, ``World.question``, ``World.answer``);
    - unrelated: the case's locality question;
    - neighbours: up to 8 other train-split subjects of the same type with the same relation, with their
      true answers (for contrast rows: the in-scope query asked about one of them);
    - portability: the case's two-hop question (through the new value);
    - offline hints: complex queries = the other training templates, long answer =
      a statement of the new fact followed by the subject's unchanged facts.
    """
    from ..world.world import load_world

    if world_dir is None:
        from ..world.build import build_world

        world_dir = build_world(preset="default")
    w = load_world(world_dir)
    missing = [lang for lang in (langs or []) if lang not in w.langs]
    if missing:
        from ..errors import DataError
        raise DataError(f"the world has languages {list(w.langs)}, not {missing}; use --langs "
                        f"{','.join(w.langs)} or a world built with those languages", path=str(world_dir))
    held = {e for e, sp in w.splits.items() if sp == "heldout"}
    if all_relations:
        # every fact of every train-split subject, edited ``edits_per_fact`` times; held-out entities are
        # neither subjects nor new values
        rng = random.Random(f"xeit-{seed}")
        case_langs = [l for l in (langs or w.langs) if l in w.langs]
        cases = []
        for sid in sorted({s for (s, _r) in w.facts}):
            if sid in held:
                continue
            for rel in w.subject_relations(sid):
                for k in range(edits_per_fact):
                    new = None
                    for _ in range(20):
                        new = w.new_value(sid, rel, rng)
                        if new not in held:
                            break
                    if new is None or new in held:
                        continue
                    cases.append(w.make_case(sid, rel, new, rng, case_langs, case_id=f"xeit-{sid}-{rel}-{k}"))
    else:
        cases = [c for c in w.counterfactual_cases(split="train") if c.meta.get("new_value") not in held]
    if limit is not None:
        cases = cases[:limit]
    facts = facts_from_cases(cases, "world", use_paraphrases=False)
    # no question about a held-out entity enters training (locality questions may name one)
    held_names = {w.name(e, l) for e in held for l in w.langs}
    for f in facts:
        for v in f.views.values():
            v.unrelated = [(q, a) for q, a in v.unrelated if not any(n in q for n in held_names)]
    want = set(langs) if langs else None
    nb_rng = random.Random(f"neighbours-{seed}")
    for f, c in zip(facts, cases):
        sid = c.meta.get("subject_id")
        rel = c.meta.get("relation")
        for lang, v in list(f.views.items()):
            if want is not None and lang not in want:
                continue
            qs = _world_questions(w, sid, rel, lang)
            if qs:
                v.queries = [q for q in qs if q != v.prompt]
                v.hints["complex_queries"] = list(v.queries)
            others = []
            for r2 in _subject_relations(w, sid):
                if r2 == rel:
                    continue
                q2s = _world_questions(w, sid, r2, lang)
                a2 = _world_answer(w, sid, r2, lang)
                if q2s and a2:
                    others.extend((q, a2) for q in q2s[:2])
            v.same_subject = others
            v.hints["out_of_scope"] = list(others)
            v.neighbours = _world_neighbours(w, sid, rel, lang, held, nb_rng)
            st = _world_statement(w, sid, rel, lang, v.target_new)
            if st:
                extra = [_world_statement(w, sid, r2, lang, None) for r2 in _subject_relations(w, sid) if r2 != rel]
                v.hints["long_answer"] = " ".join([st] + [e for e in extra if e][:2]) if lang != "zh" else \
                    "".join([st] + [e for e in extra if e][:2])
    return facts


# --- world adapters (tolerant of small API differences between world versions)

def world_replay_rows(world_dir: str | Path, langs: Sequence[str], per_fact: int, *, seed: int = 0
                      ) -> list[dict[str, Any]]:
    """XE-IT rows rehearsing what the base world model already knows: for every fact of the world (both
    splits) and every language, ``per_fact`` of its training question forms -> the world's answer, with no
    descriptor (Table 8's out-of-scope-without-descriptor kind; source ``world-replay``). They carry no
    edit, so no held-out edit enters training; they keep XE-IT from overwriting facts it never asks about."""
    from ..world.world import load_world

    w = load_world(world_dir)
    rng = random.Random(f"replay-{seed}")
    rows = []
    for f in w.all_facts():
        for lang in [l for l in langs if l in w.langs]:
            qs = w.questions(f.subject, f.relation, lang, "train")
            ans = w.answer(f.subject, f.relation, lang)
            for q in rng.sample(qs, min(per_fact, len(qs))):
                rows.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": ans}],
                             "fact_id": f"world-replay:{f.subject}-{f.relation}", "source": "world-replay",
                             "src_lang": lang, "tgt_lang": lang, "section": "mono", "scope": "out",
                             "with_edit": False, "kind": "replay", "query": q, "reference": ans,
                             "descriptor_prompt": "", "descriptor_answer": ""})
    return rows


def world_invented_facts(world_dir: str | Path, langs: Sequence[str], n: int) -> list[Fact]:
    """``n`` edit descriptors about invented people (``World.invented_facts``, never a world name), each with
    the world's training question forms as in-scope queries: facts the base model cannot know, so only
    reading the descriptor answers them (no original answer: they give in-scope rows with the descriptor)."""
    from ..world import templates as T
    from ..world.world import load_world

    w = load_world(world_dir)
    langs = [l for l in langs if l in w.langs]
    facts = []
    for i, (names, rel, value) in enumerate(w.invented_facts(n, "xeit", langs)):
        views = {}
        for lang in langs:
            qs = [T.QUESTIONS[rel][lang][f].format(s=names[lang]) for f in T.TRAIN_FORMS]
            views[lang] = FactView(subject=names[lang], prompt=qs[i % len(qs)], target_new=w.value_text(value, lang),
                                   queries=[q for q in qs if q != qs[i % len(qs)]])
        facts.append(Fact(fact_id=f"world-invented:{i}", source="world-invented", views=views,
                          meta={"relation": rel}))
    return facts


def _subject_relations(w, sid) -> list[str]:
    try:
        rels = w.subject_relations(sid)
    except Exception:  # noqa: BLE001
        return []
    if isinstance(rels, dict):
        return list(rels)
    return [r if isinstance(r, str) else getattr(r, "name", str(r)) for r in rels]


def _world_questions(w, sid, rel, lang) -> list[str]:
    """All training-template questions for (subject, relation) in ``lang``."""
    out: list[str] = []
    fn = getattr(w, "questions", None)
    if callable(fn):
        try:
            res = fn(sid, rel, lang, split="train")
        except TypeError:
            res = fn(sid, rel, lang)
        out = [q for q in res if q]
    if not out:
        for t in range(16):
            try:
                q = w.question(sid, rel, lang, template=t)
            except TypeError:
                try:
                    q = w.question(sid, rel, lang, t)
                except Exception:  # noqa: BLE001
                    break
            except Exception:  # noqa: BLE001
                break
            if not q or q in out:
                break
            out.append(q)
    return out


def _world_neighbours(w, sid, rel, lang, held, rng, k: int = 8) -> list[tuple[str, str]]:
    """Up to ``k`` other non-held-out subjects of ``sid``'s type with relation ``rel``: (name, true answer)."""
    stype = w.entities[sid].type
    cands = sorted(s for (s, r) in w.facts if r == rel and s != sid and s not in held
                   and w.entities[s].type == stype)
    out = []
    for o in rng.sample(cands, min(k, len(cands))):
        a = _world_answer(w, o, rel, lang)
        if a:
            out.append((w.name(o, lang), a))
    return out


def _world_answer(w, sid, rel, lang) -> str | None:
    try:
        return w.answer(sid, rel, lang)
    except Exception:  # noqa: BLE001
        return None


def _world_statement(w, sid, rel, lang, value) -> str | None:
    fn = getattr(w, "statement", None)
    if not callable(fn):
        return None
    try:
        return fn(sid, rel, lang, value=value) if value is not None else fn(sid, rel, lang)
    except Exception:  # noqa: BLE001
        return None


# ----------------------------------------------------------------------------- spec parsing


def load_source(spec: str, langs: Sequence[str] | None = None, *, limit: int | None = None,
                seed: int = 0, world_all_relations: bool = False, world_edits_per_fact: int = 1) -> list[Fact]:
    """Facts from one ``KIND:PATH`` spec (see module docstring)."""
    langs = parse_langs(langs) if langs else None
    kind, _, path = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "world":
        return world_facts(path or None, langs, limit=limit, seed=seed, all_relations=world_all_relations,
                           edits_per_fact=world_edits_per_fact)
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


def load_sources(specs: Sequence[str], langs: Sequence[str] | None = None, *, limit: int | None = None,
                 seed: int = 0, **world_options) -> list[Fact]:
    facts: list[Fact] = []
    for s in specs:
        facts.extend(load_source(s, langs, limit=limit, seed=seed, **world_options))
    return facts


def xeit_inputs(specs: Sequence[str], data_cfg, *, limit: int | None = None
                ) -> tuple[list[Fact], list[dict[str, Any]]]:
    """The facts of ``specs`` for XE-IT data construction and the extra rows the data config asks for; for a toy
    world source also ``world_replay`` rows and ``world_invented`` facts: what ``xke data build-xeit`` and the
    recipe build from."""
    langs = data_cfg.langs
    facts = load_sources(specs, langs, limit=limit, seed=data_cfg.seed, world_all_relations=data_cfg.world_all_relations,
                         world_edits_per_fact=data_cfg.world_edits_per_fact)
    extra: list[dict[str, Any]] = []
    if data_cfg.world_replay or data_cfg.world_invented:
        for spec in specs:
            kind, _, path = spec.partition(":")
            if kind.strip().lower() == "world":
                if not path:
                    from ..world.build import build_world
                    path = str(build_world(preset="default"))
                if data_cfg.world_replay:
                    extra += world_replay_rows(path, parse_langs(langs), data_cfg.world_replay, seed=data_cfg.seed)
                if data_cfg.world_invented:
                    facts += world_invented_facts(path, parse_langs(langs), data_cfg.world_invented)
    return facts, extra

