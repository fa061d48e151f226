"""The toy world's small cross-lingual dense retriever: the world's training data for the general
trainer (:func:`xke.memory.train_retriever.train_retriever`).

``xke world retriever [--world DIR] [--out DIR]`` runs :func:`train_world_retriever`; the result is a
normal sentence-transformers directory (default ``<world>/retriever``) with ``report.json``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

from ..config import from_dict
from ..memory.train_retriever import RetrieverTrainConfig, train_retriever
from . import templates as T
from .world import PERSON_RELATIONS, load_world


def build_pairs(world: Any, langs: Sequence[str], cfg: RetrieverTrainConfig
                ) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """Training data from a world.

    - pairs ``(a, b)``: the same sentence in two languages (``World.parallel_sentences``);
    - triples ``(anchor, positive, hard negative)``: two question forms of the same fact (any
      languages) and the positive's form asked about another subject with the same relation, so
      that the subject's name, not only the relation words, decides the match;
    - ``invented_triples`` more of them about invented people (:func:`invented_triples`).
    """
    rng = random.Random(cfg.seed)
    langs = list(langs)
    pairs: list[tuple[str, str]] = []
    for tup in world.parallel_sentences(langs):
        a, b = rng.sample(range(len(tup)), 2) if len(tup) > 1 else (0, 0)
        if tup[a] != tup[b]:
            pairs.append((tup[a], tup[b]))
    n_forms = T.N_QUESTIONS - T.N_HELDOUT
    by_rel: dict[str, list[str]] = {}
    for (subj, rel) in world.facts:
        by_rel.setdefault(rel, []).append(subj)
    triples: list[tuple[str, str, str]] = []
    for (subj, rel) in list(world.facts):
        others = [o for o in by_rel[rel] if o != subj]
        for _ in range(cfg.template_pairs_per_fact):
            la, lb = rng.choice(langs), rng.choice(langs)
            ta, tb = rng.randrange(n_forms), rng.randrange(n_forms)
            qa, qb = world.question(subj, rel, la, ta), world.question(subj, rel, lb, tb)
            if qa == qb or not others:
                continue
            neg = world.question(rng.choice(others), rel, lb, tb)
            triples.append((qa, qb, neg))
    triples += invented_triples(world, langs, cfg.invented_triples, rng)
    rng.shuffle(pairs)
    rng.shuffle(triples)
    if cfg.max_pairs is not None:
        pairs, triples = pairs[:cfg.max_pairs], triples[:cfg.max_pairs]
    return pairs, triples


def invented_triples(world: Any, langs: Sequence[str], n: int, rng: random.Random) -> list[tuple[str, str, str]]:
    """``n`` (anchor, positive, hard negative) triples about invented people: two training question forms
    of one person's relation (any languages) and the positive's form about another invented person."""
    if n <= 0:
        return []
    people = world.invented_people(2 * n, "retriever", langs)
    out = []
    for i in range(n):
        p, other = people[2 * i], people[2 * i + 1]
        rel = rng.choice(PERSON_RELATIONS)
        la, lb = rng.choice(langs), rng.choice(langs)
        fa, fb = rng.choice(T.TRAIN_FORMS), rng.choice(T.TRAIN_FORMS)
        qa, qb = T.QUESTIONS[rel][la][fa].format(s=p[la]), T.QUESTIONS[rel][lb][fb].format(s=p[lb])
        if qa != qb:
            out.append((qa, qb, T.QUESTIONS[rel][lb][fb].format(s=other[lb])))
    return out


def train_world_retriever(world_dir: str | Path, out: str | Path | None = None,
                          config: RetrieverTrainConfig | dict | None = None,
                          langs: Sequence[str] | None = None) -> Path:
    """Train the retriever of a built world (``world.json`` in ``world_dir``) into ``out`` (default
    ``<world>/retriever``); returns its directory. The report (:func:`~xke.memory.train_retriever.train_retriever`)
    measures the world's train and held-out edit cases, the held-out ones also with 999 invented-person
    edits per language in the memory."""
    cfg = config if isinstance(config, RetrieverTrainConfig) else from_dict(RetrieverTrainConfig, config or {},
                                                                             source="retriever config")
    wd = Path(world_dir)
    world = load_world(wd)
    langs = list(langs or world.langs)
    pairs, triples = build_pairs(world, langs, cfg) if len(langs) >= 2 else ([], [])
    cases = {split: world.counterfactual_cases(split, langs) for split in ("train", "heldout")}
    distractors = {a: [d["prompt"] for d in world.distractor_edits(999, a)] for a in langs}
    return train_retriever(pairs, triples, cfg, Path(out) if out else wd / "retriever", langs, cases, distractors)


def ensure_world_retriever(world_dir: str | Path) -> Path:
    """``<world>/retriever``, trained first (seconds on a CPU, once) when it is missing."""
    cand = Path(world_dir) / "retriever"
    if not (cand / "modules.json").exists():
        print(f"xke: training the toy world's cross-lingual retriever into {cand} (once)")
        train_world_retriever(world_dir, cand)
    return cand
