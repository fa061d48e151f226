"""KnowEdit ZsRE loader: every locality and portability question of a record is kept and evaluated."""

from __future__ import annotations

import json

import pytest

from xke.data.loaders import load_bench, read_jsonl, write_jsonl
from xke.errors import DataError


def knowedit_records():
    return [{
        "subject": "Leo Arons", "prompt": "What is the place of death of Leo Arons?", "target_new": "Berlin",
        "ground_truth": ["Wien"], "rephrase_prompt": "Where did Leo Arons die?",
        "portability": {
            "Reasoning": [{"prompt": "Which country did Leo Arons die in?", "ground_truth": [["Germany", "DE"]]}],
            "Subject_Aliasing": [{"prompt": "Where did Martin Leo Arons die?", "ground_truth": [["Berlin"]]}],
            "Logical_Generalization": [{"prompt": "Is Leo Arons alive?", "ground_truth": "no"}]},
        "locality": {
            "Relation_Specificity": [
                {"prompt": "The name of the father of Leo Arons is", "ground_truth": [["Albert Arons"]]},
                {"prompt": ["The field of work of Leo Arons is"], "ground_truth": [["experimental physics"]]}],
            "Forgetfulness": [{"prompt": "Leo Arons was born in", "ground_truth": "Berlin"}]},
    }, {"subject": "X", "prompt": "Who is X?", "target_new": "Y", "ground_truth": "Z", "rephrase": "X is?",
        "portability": {}, "locality": {}}]


def test_knowedit_keeps_every_locality_and_portability_question(tmp_path):
    f = tmp_path / "ZsRE-test-all.json"
    f.write_text(json.dumps(knowedit_records()), encoding="utf-8")
    cases = load_bench("knowedit", f)
    assert [c.case_id for c in cases] == ["knowedit-0", "knowedit-1"]
    c = cases[0]
    v = c.view("en")
    assert (v.target_old, v.paraphrases) == ("Wien", ["Where did Leo Arons die?"])
    qs = c.queries("en")
    loc = [(q.prompt, q.target, q.index) for q in qs if q.kind == "locality"]
    port = [(q.prompt, q.target) for q in qs if q.kind == "portability"]
    assert loc == [("The name of the father of Leo Arons is", "Albert Arons", 0),
                   ("The field of work of Leo Arons is", "experimental physics", 1),
                   ("Leo Arons was born in", "Berlin", 2)]
    assert port == [("Which country did Leo Arons die in?", "Germany"), ("Where did Martin Leo Arons die?", "Berlin"),
                    ("Is Leo Arons alive?", "no")]
    assert c.meta["locality_groups"] == ["Relation_Specificity", "Relation_Specificity", "Forgetfulness"]
    assert [q.kind for q in cases[1].queries("en")] == ["reliability", "generality"]
    # the extra questions survive xke's JSONL round trip
    back = read_jsonl(write_jsonl(tmp_path / "k.jsonl", cases))
    assert [q.key for q in back[0].queries("en")] == [q.key for q in qs]


def test_knowedit_bad_record_names_field(tmp_path):
    recs = knowedit_records()
    recs[1]["locality"] = {"Relation_Specificity": [{"prompt": "Q?"}]}
    f = tmp_path / "k.json"
    f.write_text(json.dumps(recs), encoding="utf-8")
    with pytest.raises(DataError, match=r"k.json.*record 1.*locality.Relation_Specificity\[0\].ground_truth"):
        load_bench("knowedit", f)
    with pytest.raises(DataError, match="English only"):
        load_bench("knowedit", f, langs=["zh"])


def test_knowedit_eval_scores_each_locality_question(tmp_path, tiny_model):
    from xke.eval.runner import EvalSpec, run_eval

    f = tmp_path / "k.json"
    f.write_text(json.dumps(knowedit_records()[:1]), encoding="utf-8")
    for profile in ("xke", "easyedit"):
        out = tmp_path / profile
        run_eval(EvalSpec(model="tiny-llama", out=str(out), bench="knowedit", data=str(f), profile=profile,
                          max_new_tokens=2), loaded=tiny_model, progress=False)
        recs = [json.loads(x) for x in (out / "cases.jsonl").read_text().splitlines()]
        pre = next(r for r in recs if r["type"] == "pre")
        assert sorted(pre["langs"]) == ["en", "en#1", "en#2"]
        unit = next(r for r in recs if r["type"] == "unit")["results"][0]["queries"]
        key = "tf_acc" if profile == "xke" else "loc_acc"
        # the unedited model agrees with itself on each of the three locality questions
        assert [q[key] for q in unit if q["kind"] == "locality"] == [1.0, 1.0, 1.0]
        assert sum(q["kind"] == "portability" for q in unit) == 3
