"""XE-IT data construction: Table 8 layout, X-KDE prompt, splits, sources."""

from __future__ import annotations

import json

import pytest

from xke.errors import ConfigError
from xke.methods.xkde import xkde_prompt
from xke.train.llm import OfflineSteps
from xke.train.sources import Fact, FactView, load_source
from xke.train.xeit_data import (DataConfig, build_rows, build_xeit_dataset, format_table8, read_rows, split_rows,
                                 table8_stats)
from xke.world.xeit_source import WorldSource


def _facts(n=6):
    facts = []
    for i in range(n):
        en = FactView(subject=f"Bob{i}", prompt=f"Where was Bob{i} born?", target_new=f"Paris{i}",
                      target_old=f"London{i}", queries=[f"In which city was Bob{i} born?"],
                      portability=[(f"In which country was Bob{i} born?", f"France{i}")],
                      same_subject=[(f"What is Bob{i}'s job?", f"painter{i}")],
                      unrelated=[(f"Where was Ann{i} born?", f"Rome{i}")],
                      hints={"complex_queries": [f"Which city saw the birth of Bob{i}?"]})
        zh = FactView(subject=f"鲍勃{i}", prompt=f"鲍勃{i}出生在哪里？", target_new=f"巴黎{i}", target_old=f"伦敦{i}",
                      queries=[f"鲍勃{i}的出生地是哪座城市？"], same_subject=[(f"鲍勃{i}的职业是什么？", f"画家{i}")],
                      unrelated=[(f"安{i}出生在哪里？", f"罗马{i}")],
                      hints={"complex_queries": [f"哪座城市见证了鲍勃{i}的诞生？"]})
        facts.append(Fact(fact_id=f"t:{i}", source="test", views={"en": en, "zh": zh}))
    return facts


def test_table8_layout_sections_scopes_and_prompt():
    cfg = DataConfig(langs=["en", "zh"], queries_per_pair=1, oos_per_pair=1, val_fraction=0.0)
    facts = _facts(3)
    rows = build_rows(facts, cfg)
    # per fact: 4 (s, t) pairs x [in w/, in w/o, out w/, out w/o]
    assert len(rows) == 3 * 4 * 4
    pairs = {(r["src_lang"], r["tgt_lang"]) for r in rows}
    assert pairs == {("en", "en"), ("zh", "zh"), ("en", "zh"), ("zh", "en")}
    for r in rows:
        assert r["section"] == ("mono" if r["src_lang"] == r["tgt_lang"] else "cross")
        user, ans = r["messages"][0]["content"], r["messages"][1]["content"]
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
        f = facts[int(r["fact_id"].split(":")[1])]
        vs, vt = f.views[r["src_lang"]], f.views[r["tgt_lang"]]
        if r["with_edit"]:
            # exactly the inference prompt, descriptor in the source language, query in the target language
            assert user == xkde_prompt([(vs.prompt, vs.target_new)], r["query"], r["tgt_lang"])
        else:
            assert user == r["query"]
        if r["scope"] == "in" and r["with_edit"]:
            assert ans in (vt.target_new, vt.portability[0][1] if vt.portability else None)
        if r["scope"] == "in" and not r["with_edit"]:
            assert ans == vt.target_old  # without the descriptor, knowledge is unchanged
        if r["scope"] == "out":
            assert (r["query"], ans) in vt.same_subject + vt.unrelated
    # the cross-lingual section asks in the target language about a source-language descriptor
    r = next(r for r in rows if r["src_lang"] == "en" and r["tgt_lang"] == "zh" and r["with_edit"])
    assert "respond to the subsequent query in Chinese" in r["messages"][0]["content"]
    assert "Where was Bob" in r["messages"][0]["content"]


def test_section_and_descriptor_switches():
    facts = _facts(2)
    rows = build_rows(facts, DataConfig(langs=["en", "zh"], sections=["cross"], without_descriptor=False))
    assert rows and all(r["section"] == "cross" and r["with_edit"] for r in rows)
    rows = build_rows(facts, DataConfig(langs=["en", "zh"], out_of_scope=False))
    assert rows and all(r["scope"] == "in" for r in rows)
    # no original answer known -> no in-scope row without the descriptor
    for f in facts:
        for v in f.views.values():
            v.target_old = None
    rows = build_rows(facts, DataConfig(langs=["en", "zh"]))
    assert not [r for r in rows if r["scope"] == "in" and not r["with_edit"]]
    with pytest.raises(ConfigError):
        from xke.config import from_dict

        from_dict(DataConfig, {"sections": ["both"]})


def test_split_by_fact_and_files_load_with_datasets(tmp_path):
    facts = _facts(40)
    cfg = DataConfig(langs=["en", "zh"], val_fraction=0.25, long_answers=False, formats=["jsonl", "parquet"])
    stats = build_xeit_dataset(facts, cfg, tmp_path, steps=OfflineSteps(0), quiet=True)
    train, val = read_rows(tmp_path / "train.jsonl"), read_rows(tmp_path / "validation.jsonl")
    assert stats["train_rows"] == len(train) and stats["validation_rows"] == len(val) and val
    assert not ({r["fact_id"] for r in train} & {r["fact_id"] for r in val})
    # offline backend: ground-truth complex queries went into the in-scope phrasings
    assert stats["augment"]["complex_queries"] == 80
    assert any("Which city saw the birth" in r["query"] for r in train + val)
    from datasets import load_dataset

    ds = load_dataset("json", data_files={"train": str(tmp_path / "train.jsonl")})["train"]
    assert ds[0]["messages"][1]["role"] == "assistant"
    pq = load_dataset("parquet", data_files=str(tmp_path / "train.parquet"))["train"]
    assert len(pq) == len(train)
    saved = json.loads((tmp_path / "stats.json").read_text())
    assert saved["table8"] and saved["rows"] == len(train) + len(val)


def test_table8_stats_and_print():
    rows = build_rows(_facts(2), DataConfig(langs=["en", "zh"]))
    st = table8_stats(rows)
    assert sum(s["total"] for s in st) == len(rows)
    en_zh = next(s for s in st if s["pair"] == "en->zh")
    assert en_zh["in_scope_with_edit"] == en_zh["in_scope_without_edit"] == 2
    txt = format_table8(st)
    assert "in w/" in txt and "en->zh" in txt and "cross" in txt and "Total" in txt


def test_long_answers_from_offline_hints():
    facts = _facts(2)
    for f in facts:
        f.views["en"].hints["long_answer"] = "Bob was born in Paris. He paints."
    rows = build_rows(facts, DataConfig(langs=["en", "zh"], long_answers=True))
    longs = [r for r in rows if r["kind"] == "long"]
    assert longs and all(r["tgt_lang"] == "en" and r["with_edit"] for r in longs)


def test_sources_refuse_test_sets(tmp_path):
    with pytest.raises(ConfigError):
        load_source("bizsre:/nonexistent", ["en"])
    d = tmp_path / "mzsre" / "test"
    d.mkdir(parents=True)
    (d / "en.json").write_text("[]")
    with pytest.raises(ConfigError):
        load_source(f"mzsre:{d}", ["en"])
    with pytest.raises(ConfigError):
        load_source("nonsense:/x", ["en"])


def test_jsonl_source_skips_heldout(tmp_path):
    from xke.data.schema import EditCase, LangView

    cases = [EditCase(case_id=f"c{i}", views={"en": LangView(subject=f"S{i}", prompt=f"Q{i}?", target_new=f"A{i}",
                                                               target_old=f"O{i}")},
                      meta={"split": "heldout" if i == 0 else "train"}) for i in range(3)]
    p = tmp_path / "e.jsonl"
    p.write_text("\n".join(c.to_json() for c in cases) + "\n")
    facts = load_source(f"jsonl:{p}", ["en"])
    assert [f.fact_id for f in facts] == ["jsonl:c1", "jsonl:c2"]
    assert facts[0].views["en"].unrelated  # borrowed from another case


def test_mzsre_train_source(shared_data, tmp_path):
    facts = load_source(f"mzsre:{shared_data / 'mzsre' / 'train'}", ["en", "zh"], limit=30)
    assert len(facts) == 30 and all(set(f.views) == {"en", "zh"} for f in facts)
    stats = build_xeit_dataset(facts, DataConfig(langs=["en", "zh"]), tmp_path, quiet=True)
    st = {s["pair"]: s for s in stats["table8"]}
    assert st["en->zh"]["in_scope_with_edit"] > 0 and st["en->zh"]["out_scope_without_edit"] > 0


def test_world_source_uses_train_split_only(world, tmp_path):
    from xke.world.world import load_world

    w = load_world(world)
    heldout_subjects = {c.meta["subject_id"] for c in w.counterfactual_cases(split="heldout")}
    facts = WorldSource(f"world:{world}").facts(["en", "zh"], limit=None, seed=0)
    assert facts
    with pytest.raises(ConfigError, match="provider"):   # the general loader leaves worlds to their provider
        load_source(f"world:{world}", ["en", "zh"])
    assert not {f.meta["subject_id"] for f in facts} & heldout_subjects
    f = facts[0]
    assert f.views["zh"].same_subject and f.views["en"].queries
    rows = build_rows(facts, DataConfig(langs=["en", "zh"]))
    held_templates = {p for c in w.counterfactual_cases(split="train") for v in c.views.values() for p in v.paraphrases}
    assert not {r["query"] for r in rows} & held_templates  # held-out question forms never trained on


def test_world_all_relations_never_uses_heldout_entities(world):
    from xke.world.world import load_world
    from xke.world.xeit_source import world_facts

    w = load_world(world)
    held = {e for e, sp in w.splits.items() if sp == "heldout"}
    held_names = {w.name(e, l) for e in held for l in w.langs}
    facts = world_facts(world, ["en", "zh"], all_relations=True, edits_per_fact=2)
    assert len(facts) > len(w.counterfactual_cases(split="train"))
    for f in facts:
        assert f.meta["subject_id"] not in held and f.meta["new_value"] not in held
        for v in f.views.values():
            assert not any(n in q for q, _ in v.unrelated for n in held_names)


def test_without_descriptor_share_thins_only_the_rows_without_descriptor():
    facts = _facts(40)
    full = build_rows(facts, DataConfig(langs=["en", "zh"]))
    assert build_rows(facts, DataConfig(langs=["en", "zh"], without_descriptor_share=1.0)) == full
    half = build_rows(facts, DataConfig(langs=["en", "zh"], without_descriptor_share=0.5))
    # every (fact, s, t, scope) block keeps its with-descriptor rows (which queries are drawn may differ)
    key = lambda r: (r["fact_id"], r["src_lang"], r["tgt_lang"], r["scope"])  # noqa: E731
    assert sorted(map(key, (r for r in half if r["with_edit"]))) == \
        sorted(map(key, (r for r in full if r["with_edit"])))
    n_full = sum(not r["with_edit"] for r in full)
    n_half = sum(not r["with_edit"] for r in half)
    assert 0.3 * n_full < n_half < 0.7 * n_full
    # a (fact, s, t) block keeps both or neither of its without-descriptor rows (in- and out-of-scope)
    blocks = {}
    for r in half:
        if not r["with_edit"]:
            blocks.setdefault((r["fact_id"], r["src_lang"], r["tgt_lang"]), set()).add(r["scope"])
    assert all(v == {"in", "out"} for v in blocks.values())
    from xke.config import from_dict

    for bad in (0, 1.5):
        with pytest.raises(ConfigError, match="without_descriptor_share"):
            from_dict(DataConfig, {"without_descriptor_share": bad})


def test_world_replay_rehearses_every_fact_without_any_edit(world, tmp_path):
    """Replay rows: every world fact (both splits) x language x per_fact, question -> the world's own answer,
    no descriptor, no counterfactual value; they reach the dataset as their own Table 8 line."""
    from xke.train.sources import xeit_inputs
    from xke.world.world import load_world
    from xke.world.xeit_source import world_replay_rows

    w = load_world(world)
    rows = world_replay_rows(world, ["en", "zh"], 2)
    assert len(rows) == len(w.all_facts()) * 2 * 2
    truth = {(f"world-replay:{f.subject}-{f.relation}", l): w.answer(f.subject, f.relation, l)
             for f in w.all_facts() for l in ("en", "zh")}
    for r in rows:
        assert not r["with_edit"] and r["messages"][0]["content"] == r["query"]
        assert "[Updated Information]" not in r["query"]
        assert r["reference"] == truth[(r["fact_id"], r["tgt_lang"])]
    held = {f.subject for f in w.all_facts("heldout")}
    assert any(r["fact_id"].split(":")[1].rsplit("-", 1)[0] in held for r in rows)   # held-out facts rehearsed too
    cfg = DataConfig(langs=["en", "zh"], val_fraction=0.0)
    src = WorldSource(f"world:{world}")
    facts, extra = xeit_inputs([src], cfg, options={"world": {"replay": 1}})
    assert len(extra) == len(w.all_facts()) * 2
    assert xeit_inputs([src], DataConfig(langs=["en", "zh"]))[1] == []
    stats = build_xeit_dataset(facts[:5], cfg, tmp_path / "d", extra_rows=extra, quiet=True)
    line = [s for s in stats["table8"] if s["source"] == "world-replay"]
    assert sum(s["out_scope_without_edit"] for s in line) == len(extra)
    with pytest.raises((ValueError, ConfigError)):
        src.options({"replay": -1})


def test_world_invented_facts_are_readable_only(world):
    """source_options.world.invented: facts about invented people (no world name), in-scope rows with the descriptor only,
    the same fact in every language, answered with the world's rendering of the value."""
    from xke.train.sources import xeit_inputs
    from xke.world.world import load_world
    from xke.world.xeit_source import world_invented_facts

    w = load_world(world)
    facts = world_invented_facts(world, ["en", "zh"], 12)
    assert len(facts) == 12 and facts == world_invented_facts(world, ["en", "zh"], 12)   # deterministic
    names = {n for e in w.entities.values() for n in e.names.values()}
    for f in facts:
        assert set(f.views) == {"en", "zh"}
        for lang, v in f.views.items():
            assert v.subject not in names and v.subject in v.prompt and all(v.subject in q for q in v.queries)
            assert v.target_old is None and v.queries and v.prompt not in v.queries
    rows = build_rows(facts, DataConfig(langs=["en", "zh"]))
    assert rows and all(r["scope"] == "in" and r["with_edit"] for r in rows)
    src = WorldSource(f"world:{world}")
    got, _ = xeit_inputs([src], DataConfig(langs=["en", "zh"]), options={"world": {"invented": 5}})
    assert sum(f.source == "world-invented" for f in got) == 5
    assert not any(f.source == "world-invented" for f in xeit_inputs([src], DataConfig(langs=["en", "zh"]))[0])
    with pytest.raises(ConfigError, match="invented"):
        src.options({"invented": -1})


def test_offline_data_from_a_real_source_says_what_it_lacks(shared_data, tmp_path):
    facts = load_source(f"mzsre:{shared_data / 'mzsre' / 'train'}", ["en", "zh"], limit=20)
    with pytest.warns(UserWarning, match=r"THIN: no paraphrase, portability, same_subject, complex_queries rows"):
        stats = build_xeit_dataset(facts, DataConfig(langs=["en", "zh"]), tmp_path, quiet=True)
    cov = json.loads((tmp_path / "stats.json").read_text())["coverage"]
    assert cov == stats["coverage"] and cov["backend"] == "offline"
    assert cov["missing"] == ["paraphrase", "portability", "same_subject", "complex_queries"]
    assert cov["rows_by_kind"]["out:unrelated"] > 0 and cov["rows_by_kind"]["in:query"] > 0
    # a source holding everything: nothing missing, no warning
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = build_xeit_dataset(_facts(), DataConfig(langs=["en", "zh"]), tmp_path / "full", quiet=True)
    assert full["coverage"]["missing"] == []


def test_same_subject_rows_borrowed_from_records_about_the_same_subject(tmp_path):
    from xke.data.schema import EditCase, LangView

    cases = [EditCase(case_id=f"c{i}", views={"en": LangView(subject=s, prompt=q, target_new=a, target_old=o)})
             for i, (s, q, a, o) in enumerate([("Ada", "Where was Ada born?", "Paris", "London"),
                                               ("Ada", "What was Ada's job?", "poet", "mathematician"),
                                               ("Bob", "Where was Bob born?", "Rome", "Oslo")])]
    p = tmp_path / "e.jsonl"
    p.write_text("\n".join(c.to_json() for c in cases) + "\n")
    facts = load_source(f"jsonl:{p}", ["en"])
    assert facts[0].views["en"].same_subject == [("What was Ada's job?", "mathematician")]  # the true answer
    assert facts[1].views["en"].same_subject == [("Where was Ada born?", "London")]
    assert facts[2].views["en"].same_subject == []
