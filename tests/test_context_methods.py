"""IKE, LTE and X-KDE inference on the tiny toy world: gold and retrieve modes, thresholds, restore."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xke.data.schema import Query
from xke.methods.base import build_method
from xke.methods.xkde import xkde_prompt
from xke.models.prompts import PromptFormatter
from xke.world.provider import provided_method



def _method(lm, name, **overrides):
    return provided_method(name, lm.model, lm.tokenizer, PromptFormatter(lm.tokenizer), overrides=overrides)


def _q(case, lang, kind="reliability"):
    return [q for q in case.queries(lang) if q.kind == kind][0]


def test_xkde_prompt_format():
    p = xkde_prompt([("Where was A born?", "Paris")], "A出生在哪里？", "zh")
    assert p == ("Please acknowledge the updated information provided below and respond to the subsequent query "
                 "in Chinese.\n\n[Updated Information]:\nWhere was A born? Paris\n\n[Query]:\nA出生在哪里？")
    assert "in English." in xkde_prompt([("q", "a")], "q", "en")
    two = xkde_prompt([("q1", "a1"), ("q2", "a2")], "q", "en")
    assert "1. q1 a1\n2. q2 a2" in two
    assert xkde_prompt([], "just the question", "en") == "just the question"


@pytest.mark.parametrize("name", ["xkde", "lte", "ike"])
def test_gold_mode_puts_the_edit_in_context(world_model, cases, name):
    m = _method(world_model, name, mode="gold")
    case = cases[0]
    req = case.request("en")
    q_zh, q_en = _q(case, "zh"), _q(case, "en")
    plain = m.prompt(q_zh)
    assert req.target_new not in plain  # nothing applied yet
    h = m.apply([req])
    p = m.prompt(q_zh)
    assert req.prompt in p and req.target_new in p and q_zh.prompt in p
    assert p.startswith(world_model.tokenizer.bos_token) and p.rstrip().endswith("<|assistant|>")  # chat template
    if name == "xkde":
        assert "respond to the subsequent query in Chinese" in p
        assert "in English" in m.prompt(q_en)
    if name == "lte":
        assert "[Question]:" in p
    # another case's query gets no edit
    assert req.target_new not in m.prompt(_q(cases[1], "zh")) or cases[1].view("en").target_new == req.target_new
    h.restore()
    assert m.prompt(q_zh) == plain


def test_gold_mix_uses_query_language(world_model, cases):
    m = _method(world_model, "xkde", mode="gold")
    case = cases[0]
    m.apply([case.request("zh"), case.request("en")])
    assert case.view("zh").target_new in m.prompt(_q(case, "zh"))
    assert case.view("en").prompt in m.prompt(_q(case, "en"))


def test_ike_no_target_language_answer_leak(world_model, cases):
    case = next(c for c in cases if c.view("zh").target_new not in c.view("en").target_new
                and c.view("zh").target_new not in c.view("zh").prompt)
    q = _q(case, "zh")
    # the new fact's own block carries the source-language answer only
    m0 = _method(world_model, "ike", mode="gold", k=0)
    m0.apply([case.request("en")])
    p0 = m0.prompt(q)
    assert case.view("en").target_new in p0 and case.view("zh").target_new not in p0
    # with demonstrations: k of them, none built from the edited case itself
    m = _method(world_model, "ike", mode="gold", k=3, pool_limit=None)
    assert any(c.case_id == case.case_id for c in m.pool()) or case.meta.get("split") == "heldout"
    m.apply([case.request("en")])
    p = m.prompt(q)
    assert p.count("New Fact:") == 4                       # 3 demonstrations + the new fact
    demos = m.demonstrations(case.request("en"), q)
    assert len(demos) == 3 and all(case.view("en").prompt not in d for d in demos)
    assert all(case.view("zh").prompt not in d for d in demos)
    last = p.split("\n\n")[-1]
    assert case.view("en").target_new in last and case.view("zh").target_new not in last


def test_retrieve_mode_bm25_puts_the_right_edit_in_context(world_model, cases, tmp_path):
    m = _method(world_model, "lte", mode="retrieve", retriever="bm25", threshold=0.0, top_k=1,
                memory_path=str(tmp_path / "mem.sqlite"))
    batch = cases[:10]
    h = m.apply([c.request("en") for c in batch])
    assert len(m.memory) == 10
    right = sum(c.view("en").target_new in m.prompt(_q(c, "en")) and c.view("en").prompt in m.prompt(_q(c, "en"))
                for c in batch)
    assert right >= 9
    h.restore()                                  # removes exactly the edits it added
    assert len(m.memory) == 0
    assert m.prompt(_q(batch[0], "en")) == m.formatter.format(batch[0].view("en").prompt)
    m.close()


def test_retrieve_threshold_drops_unrelated_edits(world_model, cases):
    m = _method(world_model, "xkde", mode="retrieve", retriever="bm25", threshold=1e6)
    m.apply([c.request("en") for c in cases[:5]])
    q = _q(cases[0], "en")
    assert m.prompt(q) == m.formatter.format(q.prompt)   # nothing clears the threshold
    m2 = _method(world_model, "xkde", mode="retrieve", retriever="bm25", threshold=0.0)
    m2.apply([cases[0].request("en")])
    unrelated = Query("x", "en", "locality", "Zzzz qqqq?", "")
    assert m2.prompt(unrelated) == m2.formatter.format("Zzzz qqqq?")


def test_sequential_edits_accumulate_and_restore(world_model, cases):
    m = _method(world_model, "lte", mode="retrieve", retriever="bm25", threshold=0.0)
    handles = [m.apply([c.request("en")]) for c in cases[:3]]
    assert len(m.memory) == 3
    handles[1].restore()
    assert len(m.memory) == 2
    assert cases[1].view("en").target_new not in m.prompt(_q(cases[1], "en")) or \
        cases[1].view("en").target_new in (cases[0].view("en").target_new, cases[2].view("en").target_new)


def test_retrieve_dense_cross_lingual_with_world_retriever(world_model, cases, world, tmp_path):
    """The world's trained retriever: en edits in memory, zh queries find them."""
    ret = Path(world) / "retriever"        # the shipped world's retriever (test_demo: rebuilt bit for bit)
    m = _method(world_model, "xkde", mode="retrieve", retriever_path=str(ret), threshold=None, top_k=1)
    batch = cases[:20]
    m.apply([c.request("en") for c in batch])
    right = sum(c.view("en").prompt in m.prompt(_q(c, "zh")) for c in batch)
    assert right / len(batch) >= 0.9
    rep = json.loads((ret / "report.json").read_text())
    assert rep["heldout"]["recall"]["en->zh"]["reliability_recall@1"] >= 0.9


def test_threshold_auto_is_the_retrievers_train_split_choice(world_model, world, tmp_path):
    """threshold: auto reads the calibrated threshold (chosen on the train split) from report.json;
    a report without one is a clear error naming the file."""
    import shutil

    from xke.errors import ConfigError
    ret = Path(world) / "retriever"        # the shipped world's retriever (test_demo: rebuilt bit for bit)
    rep = json.loads((ret / "report.json").read_text())
    assert rep["threshold"] == rep["train"]["chosen_threshold"] and "heldout" in rep
    fh = rep["heldout"]["with_999_distractors"]
    assert set(fh) == {"en->en", "en->zh", "zh->en", "zh->zh"} and all(0 <= x <= 1 for x in fh.values())
    mine = tmp_path / "mine"
    shutil.copytree(ret, mine)
    (mine / "report.json").write_text(json.dumps({**rep, "threshold": 0.8125}))
    m = _method(world_model, "xkde", mode="retrieve", retriever_path=str(mine), threshold="auto")
    assert m.score_threshold() == 0.8125
    assert _method(world_model, "xkde", mode="retrieve", retriever_path=str(mine), threshold=0.3).score_threshold() == 0.3
    (mine / "report.json").write_text("{}")
    with pytest.raises(ConfigError, match="report.json"):
        _method(world_model, "xkde", mode="retrieve", retriever_path=str(mine), threshold="auto").score_threshold()
    with pytest.raises(ConfigError):
        _method(world_model, "xkde", mode="retrieve", threshold="high")


def test_invented_triples_never_name_a_world_entity(world):
    import random

    from xke.memory.train_retriever import RetrieverTrainConfig
    from xke.world.retriever import build_pairs, invented_triples
    from xke.world.world import load_world
    w = load_world(world)
    triples = invented_triples(w, ["en", "zh"], 200, random.Random(0))
    assert len(triples) >= 150
    names = {n for e in w.entities.values() for n in e.names.values()}
    for a, p, n in triples:
        assert a != p and p != n and not any(x in t for x in names for t in (a, p, n))
    _, with_inv = build_pairs(w, ["en", "zh"], RetrieverTrainConfig(invented_triples=50))
    _, without = build_pairs(w, ["en", "zh"], RetrieverTrainConfig(invented_triples=0))
    assert 40 <= len(with_inv) - len(without) <= 50


def test_retrieve_without_retriever_path_is_a_clear_error(tiny_model):
    from xke.errors import ConfigError
    m = provided_method("lte", tiny_model.model, tiny_model.tokenizer, PromptFormatter(tiny_model.tokenizer),
                     overrides={"mode": "retrieve"})
    m.apply([])
    with pytest.raises(ConfigError, match="retriever_path"):
        m.prompt(Query("c", "en", "reliability", "Where?", "x"))


def test_trained_world_model_finds_its_world(world, tmp_path):
    """One rule finds a model's world: a world spec, the world's own model folder, or a model trained from a
    world and saved elsewhere (an X-KDE recipe output) through ``xke_world_dir`` in its config; a stale path
    is ignored, not trusted, and other models have none. The provider then fills the world's inputs."""
    from xke.world.provider import WORLD_FAMILY, provide_model, world_dir_of

    assert world_dir_of(f"world:{world}") == world and world_dir_of(Path(world) / "model") == world
    d = tmp_path / "xkde-model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "xke_world": True,
                                               "xke_world_dir": str(world)}))
    assert world_dir_of(d) == world
    p = provide_model(str(d))
    assert p.family == WORLD_FAMILY and p.method_defaults["stats_corpus"] == str(Path(world) / "corpus.txt")
    assert p.method_defaults["pool_split"] == "train" and p.path == d
    (d / "config.json").write_text(json.dumps({"xke_world": True, "xke_world_dir": str(tmp_path / "gone")}))
    assert world_dir_of(d) is None
    (d / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert world_dir_of(d) is None and provide_model(str(d)).family is None


def test_world_inputs_are_explicit_and_never_trained_in_gold_mode(world, world_model, tmp_path):
    """The getter only reads the config (no world, no training); the world provider fills the inputs, and
    trains a missing retriever only for a retrieve-mode run; the command line gets explicit inputs."""
    import argparse
    import shutil

    from xke.world.provider import provide_args, world_method_defaults
    from xke.world.xeit_source import WorldSource

    plain = build_method("xkde", world_model.model, world_model.tokenizer, PromptFormatter(world_model.tokenizer))
    assert plain.retriever_path() is None and plain.config.threshold == 0.5   # no provider: default presets
    assert _method(world_model, "xkde").config.threshold == "auto"            # the provider's world presets
    w2 = tmp_path / "w2"
    w2.mkdir()
    for f in ("world.json", "cases.jsonl", "corpus.txt"):
        shutil.copy(Path(world) / f, w2 / f)
    d = world_method_defaults(w2)   # gold mode: no retriever, none trained
    assert "retriever_path" not in d and not (w2 / "retriever").exists()
    assert d == {"stats_corpus": str(w2 / "corpus.txt"), "pool": str(w2 / "cases.jsonl"), "pool_split": "train"}
    args = argparse.Namespace(model=f"world:{world}", source=[f"world:{world}", "jsonl:x.jsonl"], tokenizer=None,
                              provide={"model": "model", "source": "sources", "tokenizer": "model"})
    provide_args(args)
    assert args.model == str(Path(world) / "model") and args.tokenizer is None
    assert isinstance(args.source[0], WorldSource) and str(args.source[0]) == f"world:{world}"
    assert args.source[1] == "jsonl:x.jsonl"


def test_ike_joins_chinese_facts_without_a_space(world_model, cases):
    case = next(c for c in cases if "zh" in c.views and c.view("zh").paraphrases)
    q = _q(case, "zh")
    m = _method(world_model, "ike", mode="gold", k=3, pool_limit=None, demo_query_lang="query")
    m.apply([case.request("zh")])
    p = m.prompt(q)
    zh = case.view("zh")
    assert f"New Fact: {zh.prompt.rstrip()}{zh.target_new}\n" in p       # zh: no space before the answer
    demos = m.demonstrations(case.request("zh"), q)
    text = "\n".join(demos)
    assert len(demos) == 3 and text.count("？") >= 3 and "？ " not in text  # "问题？答案", never "问题？ 答案"
    m_en = _method(world_model, "ike", mode="gold", k=0)
    m_en.apply([case.request("en")])
    en = case.view("en")
    assert f"New Fact: {en.prompt.rstrip()} {en.target_new}" in m_en.prompt(_q(case, "en"))  # en: one space
