"""The toy world's XE-IT source: ``world`` / ``world:DIR`` turned into facts and rows for
:func:`xke.train.sources.xeit_inputs` (the world side of the training data; :mod:`xke.train` never reads a
world itself).

:class:`WorldSource` is what the world provider (:mod:`xke.world.provider`) hands the trainer for such a
spec. Its options (:class:`WorldSourceConfig`) come from the ``source_options.world`` section of the
train preset (``xke/configs/train/*.yaml``) or the user's ``--config``::

    source_options:
      world:
        all_relations: true   # every fact of every train-split subject, not only its cases
        edits_per_fact: 4     # with all_relations: counterfactual edits per fact
        invented: 3000        # + facts about invented people (in-scope rows with the descriptor only)
        replay: 4             # rows per world fact and language rehearsing the base model's own knowledge

The source also gives what the recipe's evaluation needs from the world: held-out edit cases, edits about
invented people to fill an edit memory, the world's retriever (trained when missing, for retrieve-mode
evaluation only) and the marking of a trained model with its world (``xke_world_dir`` in its config).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..config import from_dict
from ..data.languages import parse_langs
from ..data.schema import EditCase
from ..errors import DataError
from ..train.sources import Fact, FactView, facts_from_cases
from . import templates as T
from .build import build_world
from .world import load_world


@dataclass
class WorldSourceConfig:
    """Options of a toy-world XE-IT source (see module docstring)."""

    #: every fact of every train-split subject, edited ``edits_per_fact`` times, not only the world's cases
    all_relations: bool = False
    #: with ``all_relations``: counterfactual edits per fact
    edits_per_fact: int = 1
    #: rows per world fact and language rehearsing the base model's own knowledge (a training question
    #: form -> the world's answer, no descriptor; every fact of both splits, never an edit). XE-IT otherwise
    #: overwrites facts its data never asks about. 0 = off.
    replay: int = 0
    #: this many extra facts about invented people (in-scope rows with the descriptor only; their answers can
    #: only be read, never recalled). 0 = off.
    invented: int = 0

    def validate(self) -> None:
        if self.replay < 0 or self.invented < 0:
            raise ValueError("source_options.world: replay and invented must be >= 0")
        if self.edits_per_fact < 1:
            raise ValueError("source_options.world: edits_per_fact must be >= 1")


class WorldSource:
    """A toy world as an XE-IT source (``spec``: ``world`` or ``world:DIR``); see module docstring."""

    kind = "world"

    def __init__(self, spec: str):
        self.spec = spec
        path = spec.partition(":")[2]
        self._dir = Path(path) if path else None

    def __str__(self) -> str:
        return self.spec

    def __repr__(self) -> str:
        return f"WorldSource({self.spec!r})"

    @property
    def world_dir(self) -> Path:
        """The world's directory (``world``: the default world, built when missing)."""
        if self._dir is None:
            self._dir = build_world(preset="default")
        return self._dir

    def options(self, raw: dict[str, Any] | None) -> WorldSourceConfig:
        """:class:`WorldSourceConfig` from the recipe's ``source_options.world`` section."""
        return from_dict(WorldSourceConfig, dict(raw or {}), source="source_options.world")

    def facts(self, langs: Sequence[str] | None, *, limit: int | None, seed: int,
              options: dict[str, Any] | None = None) -> list[Fact]:
        """The world's training facts (:func:`world_facts`)."""
        o = self.options(options)
        return world_facts(self._dir if self._dir is not None else None, langs, limit=limit, seed=seed,
                           all_relations=o.all_relations, edits_per_fact=o.edits_per_fact)

    def extras(self, langs: Sequence[str], *, seed: int, options: dict[str, Any] | None = None
               ) -> tuple[list[Fact], list[dict[str, Any]]]:
        """Facts and rows added after every source's facts: invented-people facts and replay rows."""
        o = self.options(options)
        facts: list[Fact] = []
        rows: list[dict[str, Any]] = []
        if o.replay or o.invented:
            langs = parse_langs(langs)
            if o.replay:
                rows += world_replay_rows(self.world_dir, langs, o.replay, seed=seed)
            if o.invented:
                facts += world_invented_facts(self.world_dir, langs, o.invented)
        return facts, rows

    # --- evaluation inputs -------------------------------------------------------------------------
    def heldout_cases(self, per_subject: int | None = None) -> list[EditCase]:
        """The world's held-out counterfactual cases (``World.counterfactual_cases``)."""
        return load_world(self.world_dir).counterfactual_cases(split="heldout", per_subject=per_subject)

    def distractor_edits(self, n: int, lang: str) -> list[dict[str, Any]]:
        """``n`` edit-memory rows about invented people in ``lang`` (``World.distractor_edits``)."""
        return load_world(self.world_dir).distractor_edits(n, lang)

    def retriever(self) -> Path:
        """The world's dense retriever, trained first when missing (retrieve-mode evaluation only)."""
        from .retriever import ensure_world_retriever

        return ensure_world_retriever(self.world_dir)

    def mark_model(self, model_dir: str | Path) -> None:
        """Record this world in a trained toy-world model's config (:func:`xke.world.provider.record_world`)."""
        from .provider import record_world

        record_world(model_dir, self.world_dir)


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
    - portability: the case's two-hop question (through the new value);
    - offline hints: complex queries = the other training templates, long answer =
      a statement of the new fact followed by the subject's unchanged facts.
    """
    if world_dir is None:
        world_dir = build_world(preset="default")
    w = load_world(world_dir)
    missing = [lang for lang in (langs or []) if lang not in w.langs]
    if missing:
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
            st = _world_statement(w, sid, rel, lang, v.target_new)
            if st:
                extra = [_world_statement(w, sid, r2, lang, None) for r2 in _subject_relations(w, sid) if r2 != rel]
                v.hints["long_answer"] = " ".join([st] + [e for e in extra if e][:2]) if lang != "zh" else \
                    "".join([st] + [e for e in extra if e][:2])
    return facts


def world_replay_rows(world_dir: str | Path, langs: Sequence[str], per_fact: int, *, seed: int = 0
                      ) -> list[dict[str, Any]]:
    """XE-IT rows rehearsing what the base world model already knows: for every fact of the world (both
    splits) and every language, ``per_fact`` of its training question forms -> the world's answer, with no
    descriptor (Table 8's out-of-scope-without-descriptor kind; source ``world-replay``). They carry no
    edit, so no held-out edit enters training; they keep XE-IT from overwriting facts it never asks about."""
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
