"""Pretraining text of the toy world.

An *example* is a list of ``(text, trained)`` segments; each segment is
tokenized on its own and the ids concatenated, exactly as
:func:`xke.models.prompts.encode_prompt_target` joins a rendered prompt and
its answer, so the model sees at training time the token boundaries that
evaluation and editing use. Loss is taken on ``trained`` segments only.

Kinds of examples (one epoch = :func:`epoch_examples`):

1. facts: chat-format questions (training templates) answered in every
   language (loss on the answer only) and plain statement paragraphs;
2. one world: name pairs ("The Chinese name of X is Y"), parallel
   sentences and mixed-language passages;
3. reading: a short passage of statements about *fresh* invented entities
   (and, sometimes, counterfactual statements about known train-split
   entities) followed by a question answered from the passage, in each
   language and across languages;
4. optionally two-hop questions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable

from ..data.languages import uses_spaces
from ..models.prompts import answer_separator
from ..models.tiny import CHAT_TEMPLATE
from . import templates as T
from .world import OCCUPATIONS, RELATIONS, SYLLABLES, YEAR_RANGE, World, format_year

Segment = tuple[str, bool]
Example = list[Segment]

BOS, USER, ASSISTANT, END = "<|bos|>", "<|user|>", "<|assistant|>", "<|end|>"
N_TRAIN_Q = T.N_QUESTIONS - T.N_HELDOUT


def chat_prompt(user: str) -> str:
    """The rendered chat prompt for one user message (what CHAT_TEMPLATE gives with a generation prompt)."""
    assert "{{ bos_token }}" in CHAT_TEMPLATE
    return f"{BOS}{USER}{user}\n{ASSISTANT}"


def qa_example(user: str, answer: str, lang: str) -> Example:
    p = chat_prompt(user)
    return [(p, False), (answer_separator(p, lang) + answer, True), (END, True)]


def join_sentences(sents: Iterable[str], lang: str) -> str:
    return (" " if uses_spaces(lang) else "").join(sents)


def render_question(rel: str, lang: str, k: int, s: str) -> str:
    """Training question form number ``k`` (0 .. N_TRAIN_Q-1) of ``rel`` about ``s``."""
    return T.QUESTIONS[rel][lang][T.TRAIN_FORMS[k]].format(s=s)


def render_statement(rel: str, lang: str, k: int, s: str, o: str) -> str:
    return T.STATEMENTS[rel][lang][k % len(T.STATEMENTS[rel][lang])].format(s=s, o=o)


# ---------------------------------------------------------------------------
# fresh entities for reading

@dataclass
class FreshEntity:
    names: dict[str, str]
    type: str
    facts: dict[str, dict[str, str]]  # relation -> lang -> object text
    invented: frozenset = frozenset()  # relations whose value is an invented name (transliterated, not translated)


def _fresh_person(world: World, maker, rng: random.Random, langs: list[str]) -> FreshEntity:
    lat, zh = maker.person()
    latin = rng.random() < 0.3
    names = {lg: (lat if latin else zh) if lg == "zh" else lat for lg in langs}
    facts: dict[str, dict[str, str]] = {}
    invented = set()
    if rng.random() < 0.35:  # a fresh city name: copying, not recall
        c, cz = maker.city()
        facts["birthplace"] = {lg: (cz if lg == "zh" else c) for lg in langs}
        invented.add("birthplace")
    else:
        facts["birthplace"] = _entity_text(world, rng.choice(world.entities_of("city")).id, langs)
    occ = OCCUPATIONS[rng.randrange(len(OCCUPATIONS))]
    facts["occupation"] = {lg: occ[lg] for lg in langs}
    if rng.random() < 0.35:
        c, cz, _k = maker.company()
        facts["employer"] = {lg: (cz if lg == "zh" else c) for lg in langs}
        invented.add("employer")
    else:
        facts["employer"] = _entity_text(world, rng.choice(world.entities_of("company")).id, langs)
    facts["citizenship"] = _entity_text(world, rng.choice(world.entities_of("country")).id, langs)
    y = rng.randint(*YEAR_RANGE["birth_year"])
    facts["birth_year"] = {lg: format_year(y, lg) for lg in langs}
    return FreshEntity(names, "person", facts, frozenset(invented))


def _fresh_company(world: World, maker, rng: random.Random, langs: list[str]) -> FreshEntity:
    lat, zh, _k = maker.company()
    latin = rng.random() < 0.4
    names = {lg: (lat if latin else zh) if lg == "zh" else lat for lg in langs}
    y = rng.randint(*YEAR_RANGE["founded"])
    return FreshEntity(names, "company", {
        "headquarters": _entity_text(world, rng.choice(world.entities_of("city")).id, langs),
        "founded": {lg: format_year(y, lg) for lg in langs}})


def _entity_text(world: World, eid: str, langs: list[str]) -> dict[str, str]:
    return {lg: world.name(eid, lg) for lg in langs}


def _counterfactual_entity(world: World, rng: random.Random, langs: list[str]) -> FreshEntity:
    """A known train-split person or company with some facts replaced (for in-context override)."""
    subj = rng.choice([e for e in world.entities.values()
                       if e.type in ("person", "company") and world.splits.get(e.id, "train") == "train"])
    facts = {}
    for rel in world.subject_relations(subj.id):
        val = world.value(subj.id, rel)
        if rng.random() < 0.7:
            val = world.new_value(subj.id, rel, rng)
        facts[rel] = {lg: world.value_text(val, lg) for lg in langs}
    return FreshEntity({lg: world.name(subj.id, lg) for lg in langs}, subj.type, facts)


def reading_example(world: World, maker, rng: random.Random, langs: list[str], p_lang: str, q_lang: str,
                    counterfactual: float = 0.0, follow_ups: int = 0, qa_form: float = 0.25,
                    same_form: float = 0.0) -> tuple[Example, str, str]:
    """One reading example: passage in ``p_lang``, question and answer in ``q_lang``.
    Returns (example, user message, answer).
    """
    n_ent = rng.choice((1, 2, 2, 3))
    ents = []
    for _ in range(n_ent):
        r = rng.random()
        if r < counterfactual:
            ents.append(_counterfactual_entity(world, rng, langs))
        elif r < counterfactual + (1 - counterfactual) * 0.75:
            ents.append(_fresh_person(world, maker, rng, langs))
        else:
            ents.append(_fresh_company(world, maker, rng, langs))
    stated = []  # (entity, relation)
    for e in ents:
        rels = list(e.facts)
        rng.shuffle(rels)
        for rel in rels[:rng.randint(1, min(3, len(rels)))]:
            stated.append((e, rel))
    rng.shuffle(stated)
    # when the question is in another language, only ask about values that translate (world values, years)
    askable = [x for x in stated if p_lang == q_lang or x[1] not in x[0].invented] or stated
    target_e, target_rel = rng.choice(askable)
    # the asked fact is sometimes stated as the very question that is asked (pure copying)
    same = p_lang == q_lang and same_form > 0 and rng.random() < same_form
    k_q = rng.randrange(N_TRAIN_Q) if same else -1
    sents = []
    for e, rel in stated:
        if same and (e, rel) == (target_e, target_rel):
            sents.append(render_question(rel, p_lang, k_q, e.names[p_lang]) + (" " if uses_spaces(p_lang) else "")
                         + e.facts[rel][p_lang] + ("." if uses_spaces(p_lang) else "。"))
        elif rng.random() < qa_form:  # a fact may also be given as an answered question
            q = render_question(rel, p_lang, rng.randrange(N_TRAIN_Q), e.names[p_lang])
            sents.append(q + (" " if uses_spaces(p_lang) else "") + e.facts[rel][p_lang]
                         + ("." if uses_spaces(p_lang) else "。"))
        else:
            sents.append(render_statement(rel, p_lang, rng.randrange(3), e.names[p_lang], e.facts[rel][p_lang]))
    passage = join_sentences(sents, p_lang)
    if k_q < 0:
        k_q = rng.randrange(N_TRAIN_Q)
    q = render_question(target_rel, q_lang, k_q, target_e.names[q_lang])
    user = rng.choice(T.READING_WRAPPERS[q_lang]).format(p=passage, q=q)
    ans = target_e.facts[target_rel][q_lang]
    ex = qa_example(user, ans, q_lang)
    # follow-up turns about other stated facts: more answers per passage at little cost
    others = [x for x in askable if x != (target_e, target_rel)]
    rng.shuffle(others)
    for e, rel in others[:follow_ups]:
        turn = f"\n{USER}{render_question(rel, q_lang, rng.randrange(N_TRAIN_Q), e.names[q_lang])}\n{ASSISTANT}"
        ex += [(turn, False), (answer_separator(turn, q_lang) + e.facts[rel][q_lang], True), (END, True)]
    return ex, user, ans


# ---------------------------------------------------------------------------
# one epoch

@dataclass
class CorpusMix:
    qa_per_fact: int = 2          # training question forms per fact, language and epoch
    statements: bool = True       # one statement paragraph per subject, language and epoch
    name_pairs: int = 40          # name-pair documents per epoch (each several pairs)
    mixed: int = 40               # mixed-language passages per epoch
    reading: int = 300            # reading examples per epoch (all language pairs together)
    reading_cross: float = 0.3    # fraction of reading examples with passage and question in different languages
    reading_counterfactual: float = 0.25  # fraction of passage entities that are known entities with changed facts
    reading_follow_ups: int = 2   # further questions about the same passage, as later chat turns
    reading_qa_form: float = 0.25  # fraction of passage facts written as answered questions
    reading_same_form: float = 0.0  # fraction of passages stating the asked fact as the asked question
    two_hop: bool = False         # two-hop questions about the world's facts


def epoch_examples(world: World, mix: CorpusMix, epoch: int, seed: int) -> list[Example]:
    """The examples of one epoch, deterministic for (world, mix, epoch, seed), shuffled."""
    rng = random.Random(f"epoch-{seed}-{epoch}")
    langs = world.langs
    out: list[Example] = []
    facts = world.all_facts()
    # 1. facts as chat QA
    for f in facts:
        for lg in langs:
            for k in rng.sample(range(N_TRAIN_Q), mix.qa_per_fact):
                out.append(qa_example(world.question(f.subject, f.relation, lg, k),
                                      world.answer(f.subject, f.relation, lg), lg))
            if mix.two_hop:
                hop = world.two_hop(f.subject, f.relation, lg)
                if hop and rng.random() < 0.5:
                    out.append(qa_example(hop[0], hop[1], lg))
    # 1b. statement paragraphs
    if mix.statements:
        subjects = list(dict.fromkeys(f.subject for f in facts))
        for s in subjects:
            rels = world.subject_relations(s)
            for lg in langs:
                rr = rels[:]
                rng.shuffle(rr)
                text = join_sentences([world.statement(s, r, lg, rng.randrange(3)) for r in rr], lg)
                out.append([(BOS, False), (text, True)])
    # 2. one world: name pairs, mixed passages
    if len(langs) > 1:
        ents = [e for e in world.entities.values()]
        for _ in range(mix.name_pairs):
            a, b = rng.sample(langs, 2)
            sents = []
            for e in rng.sample(ents, min(4, len(ents))):
                sents.append(T.NAME_PAIR[a].format(L=T.LANG_NAMES_IN[a][b], s=e.names[a], o=e.names[b]))
            out.append([(BOS, False), (join_sentences(sents, a), True)])
        for _ in range(mix.mixed):
            f = rng.choice(facts)
            rels = world.subject_relations(f.subject)
            sents = []
            for r in rels:
                lg = rng.choice(langs)
                sents.append(world.statement(f.subject, r, lg, rng.randrange(3)))
            # a sentence and its translation side by side
            a, b = rng.sample(langs, 2)
            k = rng.randrange(3)
            sents.append(world.statement(f.subject, f.relation, a, k))
            sents.append(world.statement(f.subject, f.relation, b, k))
            out.append([(BOS, False), ("\n".join(sents), True)])
    # 3. reading
    maker = world.fresh_maker(f"train-{epoch}")
    for _ in range(mix.reading):
        p_lang = rng.choice(langs)
        q_lang = rng.choice([x for x in langs if x != p_lang]) if (len(langs) > 1 and rng.random() < mix.reading_cross) else p_lang
        ex, _u, _a = reading_example(world, maker, rng, langs, p_lang, q_lang, mix.reading_counterfactual,
                                     mix.reading_follow_ups, mix.reading_qa_form, mix.reading_same_form)
        out.append(ex)
    rng.shuffle(out)
    return out


def reading_eval_items(world: World, lang: str, n: int, seed: int) -> list[tuple[str, str]]:
    """(user message, answer) reading questions about unseen invented entities, monolingual in ``lang``."""
    rng = random.Random(f"reading-eval-{seed}-{lang}")
    maker = world.fresh_maker(f"eval-{lang}")
    items = []
    for _ in range(n):
        _ex, user, ans = reading_example(world, maker, rng, world.langs, lang, lang, 0.0, 0, 0.25, 0.0)
        items.append((user, ans))
    return items


def corpus_lines(world: World, max_lines: int = 6000, seed: int = 0) -> list[str]:
    """A few thousand lines of world text (statements and answered questions, every language):
    the local corpus weight-editing methods use for second-moment statistics."""
    rng = random.Random(f"corpus-{seed}")
    lines = []
    for f in world.all_facts():
        for lg in world.langs:
            lines.append(world.statement(f.subject, f.relation, lg, rng.randrange(3)))
            q = world.question(f.subject, f.relation, lg, rng.randrange(N_TRAIN_Q))
            a = world.answer(f.subject, f.relation, lg)
            lines.append(q + (" " if uses_spaces(lg) else "") + a)
    rng.shuffle(lines)
    return lines[:max_lines]


def tokenizer_training_text(world: World, seed: int = 0) -> list[str]:
    """Text the tokenizer is trained on: every template rendering of every fact once, plus fresh names."""
    lines = []
    for f in world.all_facts():
        for lg in world.langs:
            lines.extend(world.questions(f.subject, f.relation, lg, "all"))
            lines.extend(world.statement(f.subject, f.relation, lg, k) for k in range(3))
    maker = world.fresh_maker("tokenizer")
    for _ in range(300):
        lat, zh = maker.person()
        lines.append(lat + " " + zh)
    lines.extend(" ".join(SYLLABLES) for _ in range(3))
    lines.extend(w for by in T.READING_WRAPPERS.values() for w in by)
    lines.extend(s for by in T.NAME_PAIR.values() for s in [by])
    for lg in world.langs:
        lines.append(" ".join(T.LANG_NAMES_IN[lg].values()))
        lines.extend(str(y) for y in range(1800, 2030))
    return lines


__all__ = ["CorpusMix", "epoch_examples", "reading_eval_items", "corpus_lines", "tokenizer_training_text",
           "qa_example", "chat_prompt", "RELATIONS"]
