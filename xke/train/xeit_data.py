"""XE-IT training data in the layout of the X-KDE paper's Table 8.

For every fact (an edit descriptor in source language ``s``) and every target
language ``t``:

- in-scope: a query about the edit in ``t`` -> the new answer in ``t``;
  WITH the descriptor (X-KDE's prompt, :func:`xke.prompts.xkde_prompt`)
  and WITHOUT it (the bare query -> the original answer, when the source knows it);
- out-of-scope: the same subject's other attribute, or an unrelated query, in
  ``t`` -> its unchanged answer; with and without the descriptor;
- a monolingual section (``s == t``) and a cross-lingual one (``s != t``);
- optionally long answers (in-scope, with descriptor).

Rows are chat messages (``messages``: user, assistant) plus bookkeeping
columns; files are ``train.jsonl``/``validation.jsonl`` (and ``.parquet``
when asked), loadable with ``datasets.load_dataset("json", ...)``. The split
is by fact, so no edit is in both. :func:`format_table8` prints the statistics.
"""

from __future__ import annotations

import hashlib
import json
import random
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..data.languages import parse_langs
from ..errors import ConfigError
from ..prompts import xkde_prompt
from .llm import StepInput
from .sources import Fact, FactView

SECTIONS = ("mono", "cross")


@dataclass
class DataConfig:
    """What goes into the XE-IT data (see module docstring)."""

    langs: list[str] = field(default_factory=lambda: ["en", "zh"])
    source_langs: list[str] | None = None          # descriptor languages (default: langs)
    sections: list[str] = field(default_factory=lambda: ["mono", "cross"])
    in_scope: bool = True
    out_of_scope: bool = True
    with_descriptor: bool = True
    without_descriptor: bool = True
    queries_per_pair: int = 1        # in-scope samples per (fact, s, t) and descriptor setting
    oos_per_pair: int = 1            # out-of-scope samples per (fact, s, t) and descriptor setting
    #: share of (fact, s, t) blocks that also get the WITHOUT-descriptor rows (1: all). With several edits
    #: of one fact (e.g. the toy world's ``edits_per_fact``) those rows repeat the same original answer; below
    #: 1 they are thinned (deterministically) and the compute goes to the rows that teach reading.
    without_descriptor_share: float = 1.0
    same_subject_share: float = 0.5  # share of out-of-scope samples asking the same subject's other attribute
    portability: bool = True         # in-scope two-hop questions when the source has them
    complex_queries: bool = True     # LLM step (offline: ground-truth phrasings)
    generate_out_of_scope: bool = False  # LLM step: irrelevant-attribute question + answer
    long_answers: bool = False       # LLM step: long in-scope answers
    max_facts: int | None = None
    val_fraction: float = 0.05
    seed: int = 0
    formats: list[str] = field(default_factory=lambda: ["jsonl"])

    def validate(self) -> None:
        parse_langs(self.langs)
        if self.source_langs:
            parse_langs(self.source_langs)
        for s in self.sections:
            if s not in SECTIONS:
                raise ValueError(f"data.sections: {s!r} is not one of {list(SECTIONS)}")
        for f in self.formats:
            if f not in ("jsonl", "parquet"):
                raise ValueError(f"data.formats: {f!r} is not jsonl or parquet")
        if not 0 < self.without_descriptor_share <= 1:
            raise ValueError("data.without_descriptor_share must be in (0, 1]")
        if not 0 <= self.val_fraction < 1:
            raise ValueError("data.val_fraction must be in [0, 1)")
        if not (self.in_scope or self.out_of_scope):
            raise ValueError("data: in_scope and out_of_scope are both off")
        if not (self.with_descriptor or self.without_descriptor):
            raise ValueError("data: with_descriptor and without_descriptor are both off")


def _row(fact: Fact, s: str, t: str, scope: str, with_edit: bool, kind: str, query: str, answer: str,
         desc: tuple[str, str]) -> dict[str, Any]:
    user = xkde_prompt([desc], query, t) if with_edit else query
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
        "fact_id": fact.fact_id, "source": fact.source, "src_lang": s, "tgt_lang": t,
        "section": "mono" if s == t else "cross", "scope": scope, "with_edit": with_edit, "kind": kind,
        "query": query, "reference": answer, "descriptor_prompt": desc[0], "descriptor_answer": desc[1],
    }


def augment_facts(facts: list[Fact], langs: Sequence[str], cfg: DataConfig, steps) -> dict[str, int]:
    """Run the Appendix A steps (complex queries, out-of-scope, long answers, quality control,
    translation) and attach their results to the views. Returns counts.

    Offline steps read ground truth from the view hints; LLM steps generate in
    the fact's first language and translate into the others.
    """
    counts: dict[str, int] = defaultdict(int)
    if not facts:
        return dict(counts)
    for f in facts:  # translation of whole views for languages a fact lacks (LLM only)
        f.meta.setdefault("generated", {})
    if not steps.offline:
        _translate_missing_views(facts, langs, steps, counts)
    todo = [(f, lang) for f in facts for lang in langs if lang in f.views]
    if steps.offline:
        groups = [todo]
    else:  # generate in each fact's pivot language, translate afterwards
        groups = [[(f, next(l for l in langs if l in f.views)) for f in facts if any(l in f.views for l in langs)]]
    for group in groups:
        items = [StepInput(subject=f.views[l].subject, prompt=f.views[l].prompt, target_new=f.views[l].target_new,
                           lang=l, hints=f.views[l].hints) for f, l in group]
        if cfg.complex_queries:
            qs = steps.complex_query(items)
            qs = _quality_filter(steps, items, qs, counts)
            for (f, l), q in zip(group, qs):
                if q:
                    f.meta["generated"].setdefault("complex", {})[l] = q
                    counts["complex_queries"] += 1
        if cfg.generate_out_of_scope:
            for (f, l), qa in zip(group, steps.out_of_scope(items)):
                if qa:
                    f.meta["generated"].setdefault("oos", {})[l] = tuple(qa)
                    counts["generated_out_of_scope"] += 1
        if cfg.long_answers:
            q_items = [StepInput(it.subject, it.prompt, it.target_new, it.lang,
                                 question=f.meta["generated"].get("complex", {}).get(l) or it.prompt, hints=it.hints)
                       for it, (f, l) in zip(items, group)]
            for (f, l), it, a in zip(group, q_items, steps.long_answer(q_items)):
                if a:
                    f.meta["generated"].setdefault("long", {})[l] = (it.question, a)
                    counts["long_answers"] += 1
    if not steps.offline:
        _translate_generated(facts, langs, steps, counts)
    # attach
    for f in facts:
        g = f.meta["generated"]
        for l, v in f.views.items():
            if l in g.get("complex", {}):
                v.queries = [g["complex"][l]] + [q for q in v.queries if q != g["complex"][l]]
            if l in g.get("oos", {}):
                v.same_subject = [tuple(g["oos"][l])] + list(v.same_subject)
    return dict(counts)


def _quality_filter(steps, items, qs, counts):
    """Judge ([T]/[F]) and score (mean of three 1-10 criteria) generated queries; drop failures."""
    cfg_llm = getattr(getattr(steps, "client", None), "cfg", None)
    if steps.offline or cfg_llm is None or not cfg_llm.judge_filter:
        return qs
    idx = [i for i, q in enumerate(qs) if q]
    j_items = [StepInput(items[i].subject, items[i].prompt, items[i].target_new, items[i].lang,
                         question=qs[i], answer=items[i].target_new) for i in idx]
    verdicts = steps.judge(j_items)
    scores = steps.score(j_items)
    out = list(qs)
    for k, i in enumerate(idx):
        if verdicts[k] is not True:
            out[i] = None
            counts["judge_rejected"] += 1
        elif scores[k] is None or scores[k] < cfg_llm.min_quality_score:
            out[i] = None
            counts["score_rejected"] += 1
    return out


def _translate_missing_views(facts, langs, steps, counts):
    for tgt in langs:
        need = [f for f in facts if tgt not in f.views and f.views]
        if not need:
            continue
        by_src = defaultdict(list)
        for f in need:
            by_src[next(iter(f.views))].append(f)
        for src, fs in by_src.items():
            texts = []
            for f in fs:
                v = f.views[src]
                texts += [v.prompt, v.target_new, v.target_old or ""]
            tr = steps.translate([t for t in texts], src, tgt)
            for k, f in enumerate(fs):
                p, n, o = tr[3 * k: 3 * k + 3]
                if p and n:
                    src_v = f.views[src]
                    f.views[tgt] = FactView(subject=src_v.subject, prompt=p, target_new=n,
                                            target_old=o if src_v.target_old else None, style=src_v.style)
                    counts["translated_views"] += 1


def _translate_generated(facts, langs, steps, counts):
    for kind in ("complex", "oos", "long"):
        for tgt in langs:
            jobs = []
            for f in facts:
                g = f.meta["generated"].get(kind, {})
                if not g or tgt in g or tgt not in f.views:
                    continue
                src, val = next(iter(g.items()))
                jobs.append((f, src, val))
            by_src = defaultdict(list)
            for j in jobs:
                by_src[j[1]].append(j)
            for src, js in by_src.items():
                texts = []
                for _, _, val in js:
                    texts += list(val) if isinstance(val, (tuple, list)) else [val]
                tr = steps.translate(texts, src, tgt)
                pos = 0
                for f, _, val in js:
                    n = len(val) if isinstance(val, (tuple, list)) else 1
                    part = tr[pos: pos + n]
                    pos += n
                    if all(part):
                        f.meta["generated"][kind][tgt] = tuple(part) if n > 1 else part[0]
                        counts[f"translated_{kind}"] += 1


def build_rows(facts: Sequence[Fact], cfg: DataConfig) -> list[dict[str, Any]]:
    """Table 8 rows for ``facts`` (after :func:`augment_facts`)."""
    langs = parse_langs(cfg.langs)
    src_langs = parse_langs(cfg.source_langs) if cfg.source_langs else langs
    rng = random.Random(cfg.seed)
    keep_rng = random.Random(f"without-{cfg.seed}")   # separate stream: share 1 leaves the rows unchanged
    rows: list[dict[str, Any]] = []
    for f in facts:
        for s in src_langs:
            vs = f.views.get(s)
            if vs is None:
                continue
            desc = (vs.prompt, vs.target_new)
            for t in langs:
                vt = f.views.get(t)
                if vt is None:
                    continue
                section = "mono" if s == t else "cross"
                if section not in cfg.sections:
                    continue
                settings = [w for w in (True, False) if (cfg.with_descriptor if w else cfg.without_descriptor)]
                if cfg.without_descriptor_share < 1 and False in settings and \
                        keep_rng.random() >= cfg.without_descriptor_share:
                    settings = [w for w in settings if w] or settings
                if cfg.in_scope:
                    inscope = [("query", vt.prompt, vt.target_new)] + [("paraphrase", q, vt.target_new)
                                                                       for q in vt.queries]
                    if cfg.portability:
                        inscope += [("portability", q, a) for q, a in vt.portability]
                    gen_long = f.meta.get("generated", {}).get("long", {}).get(t)
                    plain = [("query", vt.prompt)] + [("paraphrase", x) for x in vt.queries]
                    for w in settings:
                        if not w and not vt.target_old:
                            continue  # without the descriptor the answer is the ORIGINAL one: unknown here
                        if w:
                            picks = _pick(rng, inscope, cfg.queries_per_pair)
                        else:
                            picks = [(k, q, vt.target_old) for k, q in _pick(rng, plain, cfg.queries_per_pair)]
                        for kind, q, a in picks:
                            rows.append(_row(f, s, t, "in", w, kind, q, a, desc))
                    if gen_long and cfg.with_descriptor:
                        rows.append(_row(f, s, t, "in", True, "long", gen_long[0], gen_long[1], desc))
                    elif cfg.long_answers and vt.hints.get("long_answer") and cfg.with_descriptor:
                        rows.append(_row(f, s, t, "in", True, "long", vt.prompt, vt.hints["long_answer"], desc))
                if cfg.out_of_scope and (vt.same_subject or vt.unrelated):
                    pool = [("same_subject", q, a) for q, a in vt.same_subject]
                    pool += [("unrelated", q, a) for q, a in vt.unrelated]
                    for w in settings:
                        picks = []
                        for _ in range(min(cfg.oos_per_pair, len(pool))):
                            left = [p for p in pool if p not in picks]
                            same = [p for p in left if p[0] == "same_subject"]
                            other = [p for p in left if p[0] != "same_subject"]
                            use_same = bool(same) and (not other or rng.random() < cfg.same_subject_share)
                            cand = same if use_same else other
                            picks.append(cand[rng.randrange(len(cand))])
                        for kind, q, a in picks:
                            rows.append(_row(f, s, t, "out", w, kind, q, a, desc))
    for i, r in enumerate(rows):
        r["id"] = i
    return rows


def _pick(rng: random.Random, pool: list, k: int) -> list:
    """Up to ``k`` distinct items of ``pool`` (all of them when it is smaller)."""
    if k >= len(pool):
        return list(pool)
    return [pool[i] for i in sorted(rng.sample(range(len(pool)), k))]


def is_validation(fact_id: str, fraction: float, seed: int = 0) -> bool:
    """Deterministic split by fact: the same fact always lands on the same side."""
    if fraction <= 0:
        return False
    h = int(hashlib.sha256(f"{seed}:{fact_id}".encode()).hexdigest()[:8], 16)
    return (h % 10_000) < fraction * 10_000


def split_rows(rows: list[dict], fraction: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    train, val = [], []
    for r in rows:
        (val if is_validation(r["fact_id"], fraction, seed) else train).append(r)
    return train, val


# ----------------------------------------------------------------------------- statistics


#: row kinds the paper's data has, with the data option that asks for them and what produces them offline
ROW_KINDS = {
    "paraphrase": ("in_scope", "the source's paraphrases (MzsRE/CLM training pairs have none)"),
    "portability": ("portability", "the source's portability questions"),
    "same_subject": ("out_of_scope", "other records about the same subject, or the out-of-scope LLM step"),
    "unrelated": ("out_of_scope", "other records' questions (borrowed)"),
}


def row_coverage(rows: Sequence[dict], cfg: DataConfig, *, offline: bool, augment: dict | None = None
                 ) -> dict[str, Any]:
    """Rows per kind, and the kinds the config asks for that no row has (``missing``): with the offline
    backend a real source yields no complex queries, long answers or generated out-of-scope questions,
    and only what the source itself holds of the rest."""
    by_kind: dict[str, int] = defaultdict(int)
    for r in rows:
        by_kind[f"{r['scope']}:{r['kind']}"] += 1
    wanted = [k for k, (opt, _) in ROW_KINDS.items() if getattr(cfg, opt, False)]
    missing = [k for k in wanted if not any(key.endswith(":" + k) for key in by_kind)]
    aug = augment or {}
    for opt, count in (("complex_queries", "complex_queries"), ("generate_out_of_scope", "generated_out_of_scope"),
                       ("long_answers", "long_answers")):
        if getattr(cfg, opt, False) and not aug.get(count):
            missing.append(count)
    return {"backend": "offline" if offline else "llm", "rows_by_kind": dict(sorted(by_kind.items())),
            "missing": missing}


def coverage_warning(cov: dict[str, Any]) -> str:
    """The loud message for row kinds the data lacks."""
    why = "; ".join(f"{k}: from {ROW_KINDS[k][1] if k in ROW_KINDS else 'an LLM step'}" for k in cov["missing"])
    llm = " Use the LLM backend (llm.backend: openai) to generate them." if cov["backend"] == "offline" else ""
    return (f"X-KDE data is THIN: no {', '.join(cov['missing'])} rows ({why or 'LLM steps'}); the model will "
            f"not learn those behaviours.{llm} (stats.json 'coverage')")


def table8_stats(rows: Sequence[dict], tokenizer=None) -> list[dict[str, Any]]:
    """Rows of Table 8: per source x section x (s -> t): in-scope / out-of-scope x with/without descriptor,
    total and average length (tokens with ``tokenizer``, else characters)."""
    groups: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        key = (r["source"], r["section"], f"{r['src_lang']}->{r['tgt_lang']}")
        g = groups.setdefault(key, {"in_w": 0, "in_wo": 0, "out_w": 0, "out_wo": 0, "total": 0, "len": 0})
        g[f"{r['scope']}_{'w' if r['with_edit'] else 'wo'}"] += 1
        g["total"] += 1
        text = r["messages"][0]["content"] + r["messages"][1]["content"]
        g["len"] += len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer is not None else len(text)
    out = []
    for (src, sec, pair), g in sorted(groups.items()):
        out.append({"source": src, "section": sec, "pair": pair, "in_scope_with_edit": g["in_w"],
                    "in_scope_without_edit": g["in_wo"], "out_scope_with_edit": g["out_w"],
                    "out_scope_without_edit": g["out_wo"], "total": g["total"],
                    "avg_len": round(g["len"] / max(1, g["total"]), 1),
                    "len_unit": "tokens" if tokenizer is not None else "chars"})
    return out


def format_table8(stats: Sequence[dict]) -> str:
    """The statistics as a text table in the shape of the paper's Table 8."""
    unit = stats[0]["len_unit"] if stats else "chars"
    head = (f"{'Source':<14}{'Section':<8}{'Lang':<9}{'in w/':>8}{'in w/o':>8}{'out w/':>8}{'out w/o':>8}"
            f"{'Total':>9}{'Avg ' + unit:>12}")
    lines = [head, "-" * len(head)]
    tot = defaultdict(int)
    for s in stats:
        lines.append(f"{s['source']:<14}{s['section']:<8}{s['pair']:<9}{s['in_scope_with_edit']:>8}"
                     f"{s['in_scope_without_edit']:>8}{s['out_scope_with_edit']:>8}{s['out_scope_without_edit']:>8}"
                     f"{s['total']:>9}{s['avg_len']:>12}")
        for k in ("in_scope_with_edit", "in_scope_without_edit", "out_scope_with_edit", "out_scope_without_edit",
                  "total"):
            tot[k] += s[k]
    lines.append("-" * len(head))
    lines.append(f"{'Total':<31}{tot['in_scope_with_edit']:>8}{tot['in_scope_without_edit']:>8}"
                 f"{tot['out_scope_with_edit']:>8}{tot['out_scope_without_edit']:>8}{tot['total']:>9}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- build + write


def write_rows(rows: list[dict], path_stem: Path, formats: Sequence[str]) -> list[Path]:
    out = []
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    if "jsonl" in formats:
        p = path_stem.with_suffix(".jsonl")
        tmp = p.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        tmp.replace(p)
        out.append(p)
    if "parquet" in formats:
        from datasets import Dataset

        p = path_stem.with_suffix(".parquet")
        Dataset.from_list(rows).to_parquet(str(p))
        out.append(p)
    return out


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a ``.jsonl`` data file (or a directory holding ``train.jsonl``)."""
    p = Path(path)
    if p.is_dir():
        p = p / "train.jsonl"
    rows = []
    with open(p, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
    return rows


def build_xeit_dataset(facts: list[Fact], cfg: DataConfig, out_dir: str | Path, *, steps=None,
                       tokenizer=None, quiet: bool = False, extra_rows: Sequence[dict] = ()) -> dict[str, Any]:
    """Augment ``facts``, build Table 8 rows (plus ``extra_rows``, e.g. world replay rows), split by
    fact, write files + ``stats.json``; return the stats."""
    from .llm import OfflineSteps

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    langs = parse_langs(cfg.langs)
    if cfg.max_facts is not None:
        facts = facts[: cfg.max_facts]
    if not facts:
        raise ConfigError("no facts to build XE-IT data from (empty source?)")
    steps = steps or OfflineSteps(cfg.seed)
    aug = augment_facts(facts, langs, cfg, steps)
    rows = build_rows(facts, cfg) + list(extra_rows)
    if not rows:
        raise ConfigError(f"no XE-IT rows: the sources have no views in {langs}")
    train, val = split_rows(rows, cfg.val_fraction, cfg.seed)
    files = write_rows(train, out / "train", cfg.formats) + (write_rows(val, out / "validation", cfg.formats)
                                                             if val else [])
    stats = {"facts": len(facts), "rows": len(rows), "train_rows": len(train), "validation_rows": len(val),
             "augment": aug, "table8": table8_stats(rows, tokenizer), "config": asdict(cfg),
             "coverage": row_coverage(rows, cfg, offline=bool(getattr(steps, "offline", False)), augment=aug),
             "files": [str(f) for f in files]}
    llm_stats = getattr(getattr(steps, "client", None), "stats", None)
    if llm_stats is not None:
        stats["llm"] = asdict(llm_stats)
    (out / "stats.json").write_text(json.dumps(stats, ensure_ascii=False, indent=2), encoding="utf-8")
    if stats["coverage"]["missing"]:
        warnings.warn(coverage_warning(stats["coverage"]), stacklevel=2)
    if not quiet:
        print(format_table8(stats["table8"]))
        print(f"{len(facts)} facts -> {len(rows)} rows ({len(train)} train, {len(val)} validation) in {out}")
    return stats
