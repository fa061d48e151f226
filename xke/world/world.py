"""The toy multilingual world: entities, relations, facts and their surface forms.

A :class:`World` is generated from a seed (:func:`generate_world`) and saved
as ``world.json`` (:meth:`World.save`, :func:`load_world`). Entities are
people, cities, countries, companies, languages and occupations; ten
relations link them (and years). Every entity has a surface form per
language: invented names are transliterated syllable by syllable into
Chinese for most entities and kept in Latin script for some (as in real
Chinese data); years are written ``1987`` / ``1987年``.

The API other parts of xke use:

- :meth:`World.question` / :meth:`World.questions` / :meth:`World.answer`
  / :meth:`World.statement`: rendered text of a fact in a language;
- :meth:`World.subject_relations`: the relations a subject has;
- :meth:`World.counterfactual_cases`: edit cases (:class:`~xke.data.schema.EditCase`)
  with ``meta["split"]`` ``"train"`` or ``"heldout"`` (held-out subjects are
  never used in method training);
- :meth:`World.parallel_sentences`: aligned sentences across languages;
- :meth:`World.fresh_person` and friends: invented entities outside the world
  (reading passages).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..data.languages import normalize_lang
from ..data.schema import EditCase, LangView
from ..errors import XkeError
from . import templates as T

# ---------------------------------------------------------------------------
# vocabulary of the generator

#: Latin syllable -> Chinese transliteration character(s)
SYLLABLES: dict[str, str] = {
    "ba": "巴", "be": "贝", "bo": "博", "da": "达", "de": "德", "do": "多", "fa": "法", "fe": "费",
    "fi": "菲", "ga": "加", "go": "戈", "ha": "哈", "he": "赫", "ka": "卡", "ke": "克", "ki": "基",
    "ko": "科", "la": "拉", "le": "莱", "li": "利", "lo": "洛", "lu": "卢", "ma": "马", "me": "梅",
    "mi": "米", "mo": "莫", "na": "纳", "ne": "内", "ni": "尼", "no": "诺", "pa": "帕", "pe": "佩",
    "po": "波", "ri": "里", "ro": "罗", "ru": "鲁", "sa": "萨", "se": "塞", "si": "西", "so": "索",
    "ta": "塔", "te": "特", "ti": "蒂", "to": "托", "va": "瓦", "ve": "维", "vi": "薇", "zo": "佐",
    "zi": "齐", "ton": "顿", "lan": "兰", "mar": "马尔", "dor": "多尔", "ven": "文", "sen": "森",
    "kin": "金", "ber": "伯", "gan": "甘", "rin": "林", "tal": "塔尔",
}
_SYL = sorted(SYLLABLES)

OCCUPATIONS: list[dict[str, str]] = [
    {"en": "doctor", "zh": "医生", "de": "Arzt", "fr": "médecin"},
    {"en": "engineer", "zh": "工程师", "de": "Ingenieur", "fr": "ingénieur"},
    {"en": "teacher", "zh": "教师", "de": "Lehrer", "fr": "enseignant"},
    {"en": "lawyer", "zh": "律师", "de": "Anwalt", "fr": "avocat"},
    {"en": "painter", "zh": "画家", "de": "Maler", "fr": "peintre"},
    {"en": "singer", "zh": "歌手", "de": "Sänger", "fr": "chanteur"},
    {"en": "writer", "zh": "作家", "de": "Schriftsteller", "fr": "écrivain"},
    {"en": "chef", "zh": "厨师", "de": "Koch", "fr": "cuisinier"},
    {"en": "pilot", "zh": "飞行员", "de": "Pilot", "fr": "pilote"},
    {"en": "architect", "zh": "建筑师", "de": "Architekt", "fr": "architecte"},
    {"en": "farmer", "zh": "农民", "de": "Landwirt", "fr": "agriculteur"},
    {"en": "journalist", "zh": "记者", "de": "Journalist", "fr": "journaliste"},
    {"en": "nurse", "zh": "护士", "de": "Krankenpfleger", "fr": "infirmier"},
    {"en": "actor", "zh": "演员", "de": "Schauspieler", "fr": "acteur"},
    {"en": "scientist", "zh": "科学家", "de": "Wissenschaftler", "fr": "scientifique"},
    {"en": "photographer", "zh": "摄影师", "de": "Fotograf", "fr": "photographe"},
    {"en": "dancer", "zh": "舞蹈家", "de": "Tänzer", "fr": "danseur"},
    {"en": "banker", "zh": "银行家", "de": "Bankier", "fr": "banquier"},
    {"en": "poet", "zh": "诗人", "de": "Dichter", "fr": "poète"},
    {"en": "physicist", "zh": "物理学家", "de": "Physiker", "fr": "physicien"},
]

COMPANY_SUFFIXES: list[dict[str, str]] = [
    {"en": "Corp", "zh": "公司"}, {"en": "Group", "zh": "集团"}, {"en": "Industries", "zh": "工业"},
    {"en": "Systems", "zh": "系统"}, {"en": "Labs", "zh": "实验室"}, {"en": "Motors", "zh": "汽车"},
    {"en": "Foods", "zh": "食品"}, {"en": "Media", "zh": "传媒"},
]


@dataclass(frozen=True)
class Relation:
    name: str
    subject_type: str
    object_type: str  # an entity type or "year"


RELATIONS: dict[str, Relation] = {r.name: r for r in [
    Relation("birthplace", "person", "city"),
    Relation("occupation", "person", "occupation"),
    Relation("employer", "person", "company"),
    Relation("citizenship", "person", "country"),
    Relation("birth_year", "person", "year"),
    Relation("headquarters", "company", "city"),
    Relation("founded", "company", "year"),
    Relation("city_country", "city", "country"),
    Relation("capital", "country", "city"),
    Relation("official_language", "country", "language"),
]}

#: relations whose subject is a person, in RELATIONS order (facts about invented people use them)
PERSON_RELATIONS: tuple[str, ...] = tuple(r.name for r in RELATIONS.values() if r.subject_type == "person")

YEAR_RANGE = {"birth_year": (1900, 2005), "founded": (1800, 2015)}


def format_year(year: int, lang: str) -> str:
    """A year as written in ``lang``: ``1987`` or ``1987年``."""
    return f"{year}年" if lang in ("zh", "ja") else str(year)


@dataclass
class Entity:
    id: str
    type: str
    names: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "names": self.names}


@dataclass
class WorldFact:
    """A true fact of the toy world: ``subject`` (an entity id) has ``relation`` with ``object``."""

    subject: str
    relation: str
    object: str | int  # entity id, or a year

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "relation": self.relation, "object": self.object}


# ---------------------------------------------------------------------------
# names

class NameMaker:
    """Invented names from syllables, with their Chinese transliteration; never repeats a name."""

    def __init__(self, rng: random.Random, taken: set[str] | None = None):
        self.rng = rng
        self.taken = taken if taken is not None else set()

    def stem(self, n_min: int = 2, n_max: int = 3) -> tuple[str, str]:
        syl = [self.rng.choice(_SYL) for _ in range(self.rng.randint(n_min, n_max))]
        return "".join(syl).capitalize(), "".join(SYLLABLES[s] for s in syl)

    def unique(self, make) -> tuple[str, str]:
        for _ in range(1000):
            lat, zh = make()
            if lat not in self.taken and zh not in self.taken:
                self.taken.update((lat, zh))
                return lat, zh
        raise RuntimeError("name space exhausted")

    def person(self) -> tuple[str, str]:
        def make():
            g, gz = self.stem(2, 2)
            f, fz = self.stem(2, 3)
            return f"{g} {f}", f"{gz}·{fz}"
        return self.unique(make)

    def city(self) -> tuple[str, str]:
        return self.unique(lambda: self.stem(2, 3))

    def country(self) -> tuple[str, str]:
        def make():
            s, sz = self.stem(2, 2)
            return s + "ria", sz + "里亚"
        return self.unique(make)

    def company(self) -> tuple[str, str, int]:
        k = self.rng.randrange(len(COMPANY_SUFFIXES))
        suf = COMPANY_SUFFIXES[k]

        def make():
            s, sz = self.stem(2, 2)
            return f"{s} {suf['en']}", sz + suf["zh"]
        lat, zh = self.unique(make)
        return lat, zh, k


def _names(lat: str, zh: str, langs: Iterable[str], latin_in_zh: bool) -> dict[str, str]:
    out = {}
    for lang in langs:
        out[lang] = (lat if latin_in_zh else zh) if lang == "zh" else lat
    return out


# ---------------------------------------------------------------------------
# the world

@dataclass
class World:
    """A generated world. ``entities`` by id, ``facts`` by (subject, relation)."""

    seed: int
    langs: list[str]
    entities: dict[str, Entity]
    facts: dict[tuple[str, str], WorldFact]
    splits: dict[str, str] = field(default_factory=dict)  # subject id -> "train" | "heldout"
    cases_per_subject: int = 1

    # -- lookups --------------------------------------------------------------
    def entities_of(self, type_: str, split: str | None = None) -> list[Entity]:
        """Entities of a type, optionally only those of a split (``train`` / ``heldout``)."""
        return [e for e in self.entities.values()
                if e.type == type_ and (split is None or self.splits.get(e.id, "train") == split)]

    def name(self, entity_id: str, lang: str) -> str:
        """Surface form of an entity in ``lang``."""
        e = self.entities[entity_id]
        return e.names[lang] if lang in e.names else e.names["en"]

    def subject_relations(self, subject_id: str) -> list[str]:
        """Relations that ``subject_id`` has a fact for, in the canonical order."""
        return [r for r in RELATIONS if (subject_id, r) in self.facts]

    def value(self, subject_id: str, relation: str) -> str | int:
        """The object of a fact (entity id or year)."""
        try:
            return self.facts[(subject_id, relation)].object
        except KeyError:
            raise XkeError(f"the world has no fact {relation!r} for {subject_id!r}") from None

    def value_text(self, obj: str | int, lang: str) -> str:
        """Surface form of an object (an entity id or a year) in ``lang``."""
        if isinstance(obj, int):
            return format_year(obj, lang)
        return self.name(obj, lang)

    def answer(self, subject_id: str, relation: str, lang: str, value: str | int | None = None) -> str:
        """The answer text of a fact (or of ``value`` instead of the world's object)."""
        lang = normalize_lang(lang)
        return self.value_text(self.value(subject_id, relation) if value is None else value, lang)

    def questions(self, subject_id: str, relation: str, lang: str, split: str = "train") -> list[str]:
        """Question forms of a fact: ``train`` (used in pretraining), ``heldout`` or ``all``."""
        lang = normalize_lang(lang)
        forms = T.QUESTIONS[relation][lang]
        if split not in ("train", "heldout", "all"):
            raise XkeError(f"split must be train, heldout or all, not {split!r}")
        idx = {"train": T.TRAIN_FORMS, "heldout": T.HELDOUT_FORMS, "all": range(len(forms))}[split]
        sel = [forms[i] for i in idx]
        s = self.name(subject_id, lang)
        return [q.format(s=s) for q in sel]

    def question(self, subject_id: str, relation: str, lang: str, template: int = 0,
                 heldout: bool = False) -> str:
        """One question form (index ``template`` among the train or held-out forms)."""
        qs = self.questions(subject_id, relation, lang, "heldout" if heldout else "train")
        return qs[template % len(qs)]

    def statement(self, subject_id: str, relation: str, lang: str, template: int = 0,
                  value: str | int | None = None) -> str:
        """A plain sentence stating the fact (or ``value`` instead)."""
        lang = normalize_lang(lang)
        forms = T.STATEMENTS[relation][lang]
        return forms[template % len(forms)].format(s=self.name(subject_id, lang),
                                                   o=self.answer(subject_id, relation, lang, value))

    def two_hop(self, subject_id: str, relation: str, lang: str,
                value: str | int | None = None) -> tuple[str, str] | None:
        """A two-hop question starting with ``relation`` and its answer through ``value``
        (default the world's object), or None when the relation has no second hop."""
        for (r1, r2), forms in T.TWO_HOP.items():
            if r1 != relation:
                continue
            mid = self.value(subject_id, r1) if value is None else value
            if not isinstance(mid, str) or (mid, r2) not in self.facts:
                return None
            lang = normalize_lang(lang)
            return forms[lang].format(s=self.name(subject_id, lang)), self.answer(mid, r2, lang)
        return None

    def all_facts(self, split: str | None = None) -> list[WorldFact]:
        """Facts in canonical order, optionally of subjects in one split."""
        return [f for f in self.facts.values()
                if split is None or self.splits.get(f.subject, "train") == split]

    # -- parallel text ----------------------------------------------------------
    def parallel_sentences(self, langs: Iterable[str] | None = None, *, questions: bool = True) -> list[tuple[str, ...]]:
        """Aligned sentences: one tuple per fact rendering, one sentence per language of ``langs``
        (default the world's languages), in that order. Statements (every template) and, with
        ``questions``, the training question forms; deterministic."""
        langs = [normalize_lang(x) for x in (langs or self.langs)]
        out: list[tuple[str, ...]] = []
        for f in self.facts.values():
            for k in range(len(T.STATEMENTS[f.relation]["en"])):
                out.append(tuple(self.statement(f.subject, f.relation, lg, k) for lg in langs))
            if questions:
                n = T.N_QUESTIONS - T.N_HELDOUT
                for k in range(n):
                    out.append(tuple(self.question(f.subject, f.relation, lg, k) for lg in langs))
        return out

    def name_pairs(self, src: str, tgt: str) -> list[tuple[str, str]]:
        """(name in src, name in tgt) for every entity whose names differ between the two."""
        return [(e.names[src], e.names[tgt]) for e in self.entities.values()
                if src in e.names and tgt in e.names]

    # -- edit cases -------------------------------------------------------------
    def new_value(self, subject_id: str, relation: str, rng: random.Random) -> str | int:
        """A counterfactual object of the right type, different from the true one."""
        old = self.value(subject_id, relation)
        otype = RELATIONS[relation].object_type
        if otype == "year":
            lo, hi = YEAR_RANGE[relation]
            while True:
                y = rng.randint(lo, hi)
                if y != old:
                    return y
        pool = [e.id for e in self.entities.values() if e.type == otype and e.id != old]
        if relation == "capital":  # a city of the same country reads as a plausible capital change
            same = [c for c in pool if self.facts.get((c, "city_country")) and
                    self.facts[(c, "city_country")].object == subject_id]
            pool = same or pool
        return rng.choice(pool)

    def make_case(self, subject_id: str, relation: str, new: str | int, rng: random.Random,
                  langs: Iterable[str] | None = None, case_id: str | None = None) -> EditCase:
        """The edit case "``relation`` of ``subject_id`` is now ``new``" in ``langs``."""
        langs = [normalize_lang(x) for x in (langs or self.langs)]
        old = self.value(subject_id, relation)
        stype = self.entities[subject_id].type
        # locality: another subject's fact of the same relation, from the same split (so train cases
        # never mention held-out subjects)
        split = self.splits.get(subject_id, "train")
        others = [s for (s, r) in self.facts if r == relation and s != subject_id
                  and self.entities[s].type == stype]
        others = [s for s in others if self.splits.get(s, "train") == split] or others
        loc_subj = rng.choice(others)
        t_rel = rng.randrange(T.N_QUESTIONS - T.N_HELDOUT)
        t_loc = rng.randrange(T.N_QUESTIONS - T.N_HELDOUT)
        views = {}
        for lang in langs:
            hop = self.two_hop(subject_id, relation, lang, value=new)
            views[lang] = LangView(
                subject=self.name(subject_id, lang),
                prompt=self.question(subject_id, relation, lang, t_rel),
                target_new=self.answer(subject_id, relation, lang, new),
                target_old=self.answer(subject_id, relation, lang, old),
                paraphrases=self.questions(subject_id, relation, lang, "heldout"),
                locality_prompt=self.question(loc_subj, relation, lang, t_loc),
                locality_answer=self.answer(loc_subj, relation, lang),
                portability_prompt=hop[0] if hop else None,
                portability_answer=hop[1] if hop else None,
            )
        meta = {"split": self.splits.get(subject_id, "train"), "subject_id": subject_id, "relation": relation,
                "locality_subject_id": loc_subj, "old_value": old, "new_value": new, "source": "xke-world", "world_seed": self.seed}
        return EditCase(case_id=case_id or f"w{self.seed}-{subject_id}-{relation}", views=views, meta=meta)

    def counterfactual_cases(self, split: str = "all", langs: Iterable[str] | None = None,
                             per_subject: int | None = None) -> list[EditCase]:
        """Counterfactual edit cases (deterministic for the world's seed and ``per_subject``):
        ``per_subject`` (default the world's ``cases_per_subject``) per person and company, one per
        city and country, each on a different relation; ``split`` is ``train``, ``heldout`` or
        ``all``. Cases of portability-bearing relations are preferred. ``per_subject`` ≥ 5 gives a
        case for every fact of every person and company (the most a world has)."""
        if split not in ("train", "heldout", "all"):
            raise XkeError(f"split must be train, heldout or all, not {split!r}")
        per_subject = self.cases_per_subject if per_subject is None else int(per_subject)
        if per_subject < 1:
            raise XkeError(f"per_subject must be >= 1, got {per_subject}")
        rng = random.Random(f"cases-{self.seed}")
        two_hop_rels = {r1 for (r1, _r2) in T.TWO_HOP}
        out = []
        for e in self.entities.values():
            rels = self.subject_relations(e.id)
            if not rels:
                continue
            n = per_subject if e.type in ("person", "company") else 1
            weights = [3 if r in two_hop_rels else 1 for r in rels]
            chosen: list[str] = []
            while len(chosen) < min(n, len(rels)):
                r = rng.choices(rels, weights)[0]
                if r not in chosen:
                    chosen.append(r)
            for r in chosen:
                new = self.new_value(e.id, r, rng)
                case = self.make_case(e.id, r, new, rng, langs)
                if split == "all" or case.meta["split"] == split:
                    out.append(case)
        return out

    def distractor_edits(self, n: int, lang: str, *, stream: str = "distractors") -> list[dict[str, Any]]:
        """``n`` edit descriptors about invented people (never a world name), as edit-memory JSONL
        rows (``lang``, ``prompt``, ``target_new``, ``subject``, ``case_id``): filler that makes an
        edit memory large without touching any fact a test asks about."""
        lang = normalize_lang(lang)
        if n < 0:
            raise XkeError(f"n must be >= 0, got {n}")
        rng = random.Random(f"distractors-{self.seed}-{stream}")
        out = []
        for i, names in enumerate(self.invented_people(n, stream, [lang])):
            name = names[lang]
            rel = rng.choice(PERSON_RELATIONS)
            value = self.random_value(rel, rng)
            form = T.QUESTIONS[rel][lang][T.TRAIN_FORMS[rng.randrange(len(T.TRAIN_FORMS))]]
            out.append({"lang": lang, "prompt": form.format(s=name), "target_new": self.value_text(value, lang),
                        "subject": name, "case_id": f"w{self.seed}-{stream}-{i}"})
        return out

    def random_value(self, relation: str, rng: random.Random) -> str | int:
        """A random object of ``relation``'s type: a year in its range or an entity id of the right type."""
        rel = RELATIONS[relation]
        if rel.object_type == "year":
            return rng.randint(*YEAR_RANGE[rel.name])
        return rng.choice([e.id for e in self.entities.values() if e.type == rel.object_type])

    def invented_facts(self, n: int, stream: str, langs: Iterable[str] | None = None
                       ) -> list[tuple[dict[str, str], str, str | int]]:
        """``n`` facts about invented people: ({language: name}, person relation, value), deterministic for
        ``stream``; nothing a model pretrained on the world can know."""
        rng = random.Random(f"invented-{self.seed}-{stream}")
        out = []
        for names in self.invented_people(n, stream, langs):
            rel = rng.choice(PERSON_RELATIONS)
            out.append((names, rel, self.random_value(rel, rng)))
        return out

    # -- fresh (invented, not in the world) entities for reading -----------------
    def invented_people(self, n: int, stream: str, langs: Iterable[str] | None = None) -> list[dict[str, str]]:
        """``n`` invented people (never a world name) as {language: name}, deterministic for ``stream``."""
        langs = [normalize_lang(x) for x in (langs or self.langs)]
        maker = self.fresh_maker(stream)
        return [_names(*maker.person(), langs, latin_in_zh=False) for _ in range(n)]

    def fresh_maker(self, stream: str) -> NameMaker:
        """A name maker that never yields a world name; ``stream`` seeds it (e.g. 'train-3', 'eval')."""
        taken = {n for e in self.entities.values() for n in e.names.values()}
        return NameMaker(random.Random(f"fresh-{self.seed}-{stream}"), taken)

    # -- serialisation ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": "xke-world/1", "seed": self.seed, "langs": self.langs,
                "cases_per_subject": self.cases_per_subject,
                "relations": {r.name: {"subject_type": r.subject_type, "object_type": r.object_type}
                              for r in RELATIONS.values()},
                "entities": [e.to_dict() for e in self.entities.values()],
                "facts": [f.to_dict() for f in self.facts.values()],
                "splits": self.splits}

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1, sort_keys=False) + "\n",
                     encoding="utf-8")
        return p

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "World":
        ents = {e["id"]: Entity(e["id"], e["type"], dict(e["names"])) for e in d["entities"]}
        facts = {(f["subject"], f["relation"]): WorldFact(f["subject"], f["relation"], f["object"])
                 for f in d["facts"]}
        return cls(seed=d["seed"], langs=list(d["langs"]), entities=ents, facts=facts,
                   splits=dict(d.get("splits", {})), cases_per_subject=d.get("cases_per_subject", 1))


def load_world(path: str | Path) -> World:
    """Load a world from a world directory (its ``world.json``) or a ``world.json`` file."""
    p = Path(path)
    if p.is_dir():
        p = p / "world.json"
    if not p.exists():
        raise XkeError(f"no world at {path} (expected a directory with world.json, built by `xke world build`)")
    try:
        return World.from_dict(json.loads(p.read_text(encoding="utf-8")))
    except (ValueError, KeyError) as e:
        raise XkeError(f"{p}: not a valid world file: {e}") from e


def generate_world(seed: int = 0, langs: Iterable[str] = ("en", "zh"), *, n_countries: int = 12,
                   cities_per_country: int = 3, n_companies: int = 30, n_people: int = 150,
                   latin_person: float = 0.2, latin_company: float = 0.3, heldout_fraction: float = 0.2,
                   cases_per_subject: int = 1) -> World:
    """Generate a world deterministically from ``seed``."""
    langs = [normalize_lang(x) for x in langs]
    for lg in langs:
        if lg not in T.SUPPORTED_LANGS:
            raise XkeError(f"the toy world has templates for {', '.join(T.SUPPORTED_LANGS)}, not {lg!r}")
    rng = random.Random(f"world-{seed}")
    names = NameMaker(rng)
    ents: dict[str, Entity] = {}
    facts: dict[tuple[str, str], WorldFact] = {}

    def add(e: Entity):
        ents[e.id] = e

    def fact(s, r, o):
        facts[(s, r)] = WorldFact(s, r, o)

    for i, occ in enumerate(OCCUPATIONS):
        add(Entity(f"occ{i}", "occupation", {lg: occ[lg] for lg in langs}))
    countries = []
    for i in range(n_countries):
        lat, zh = names.country()
        cid = f"country{i}"
        add(Entity(cid, "country", _names(lat, zh, langs, False)))
        stem = lat[:-3]
        lang_names = {"en": stem + "ian", "zh": zh + "语", "de": stem + "isch", "fr": stem.lower() + "ien"}
        add(Entity(f"lang{i}", "language", {lg: lang_names[lg] for lg in langs}))
        countries.append(cid)
    cities = []
    for cid in countries:
        for j in range(cities_per_country):
            lat, zh = names.city()
            xid = f"city{len(cities)}"
            add(Entity(xid, "city", _names(lat, zh, langs, False)))
            cities.append(xid)
            fact(xid, "city_country", cid)
            if j == 0:
                fact(cid, "capital", xid)
        fact(cid, "official_language", f"lang{countries.index(cid)}")
    companies = []
    for i in range(n_companies):
        lat, zh, k = names.company()
        coid = f"company{i}"
        add(Entity(coid, "company", _names(lat, zh, langs, rng.random() < latin_company)))
        companies.append(coid)
        fact(coid, "headquarters", rng.choice(cities))
        fact(coid, "founded", rng.randint(*YEAR_RANGE["founded"]))
    n_occ = len(OCCUPATIONS)
    for i in range(n_people):
        lat, zh = names.person()
        pid = f"person{i}"
        add(Entity(pid, "person", _names(lat, zh, langs, rng.random() < latin_person)))
        city = rng.choice(cities)
        fact(pid, "birthplace", city)
        fact(pid, "occupation", f"occ{rng.randrange(n_occ)}")
        fact(pid, "employer", rng.choice(companies))
        # citizenship mostly the birth country
        fact(pid, "citizenship", facts[(city, "city_country")].object if rng.random() < 0.7 else rng.choice(countries))
        fact(pid, "birth_year", rng.randint(*YEAR_RANGE["birth_year"]))
    # held-out subjects: a fraction of people and companies
    splits: dict[str, str] = {}
    for type_ in ("person", "company", "city", "country"):
        ids = [e.id for e in ents.values() if e.type == type_]
        k = round(len(ids) * heldout_fraction)
        held = set(rng.sample(ids, k))
        for x in ids:
            splits[x] = "heldout" if x in held else "train"
    # canonical fact order: by entity order then relation order
    order = {eid: i for i, eid in enumerate(ents)}
    rel_order = {r: i for i, r in enumerate(RELATIONS)}
    facts = dict(sorted(facts.items(), key=lambda kv: (order[kv[0][0]], rel_order[kv[0][1]])))
    return World(seed=seed, langs=langs, entities=ents, facts=facts, splits=splits,
                 cases_per_subject=cases_per_subject)
