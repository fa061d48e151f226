"""``xke general``: lm-evaluation-harness tasks before and after N edits (X-KDE Table 3, degradation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval")

from xke.cli import main  # noqa: E402
from xke.errors import DataError  # noqa: E402
from xke.eval import general as G  # noqa: E402


# ------------------------------------------------------------------------------- task data
def test_world_task_rows_leave_out_edited_facts_and_know_the_answer(world):
    from xke.world.templates import HELDOUT_FORMS, QUESTIONS
    from xke.world.world import load_world

    w = load_world(world)
    facts = w.all_facts()
    edited = {f"fact:{facts[0].subject}/{facts[0].relation}", f"fact:{facts[5].subject}/{facts[5].relation}"}
    for lang in ("en", "zh"):
        rows = G.world_task_rows(w, lang, edited)
        assert len(rows["mc"]) == len(rows["qa"]) == len(rows["heldout"]) == len(facts) - 2
        done = {r["fact"] for r in rows["qa"]}
        assert f"{facts[0].subject}/{facts[0].relation}" not in done
        assert f"{facts[1].subject}/{facts[1].relation}" in done
        for mc, qa, held in zip(rows["mc"], rows["qa"], rows["heldout"]):
            subj, rel = qa["fact"].split("/")
            truth = w.answer(subj, rel, lang)
            assert qa["answer"] == held["answer"] == truth
            assert mc["choices"][mc["answer"]] == truth and len(set(mc["choices"])) == G.WORLD_MC_CHOICES
            assert mc["question"] == qa["question"] in w.questions(subj, rel, lang, "train")
            held_forms = [QUESTIONS[rel][lang][i].format(s=w.name(subj, lang)) for i in HELDOUT_FORMS]
            assert held["question"] in held_forms
    # deterministic
    assert G.world_task_rows(w, "en", edited) == G.world_task_rows(w, "en", edited)


def test_task_data_errors_name_file_record_and_field(tmp_path):
    p = tmp_path / "mmlu.json"
    p.write_text(json.dumps([{"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 2},
                             {"question": "Q2?", "choices": ["a", "b", "c", "d"], "answer": 7}]))
    with pytest.raises(DataError) as e:
        G.check_task_data(p, ["question", "choices", "answer"], "xke_mmlu")
    assert str(p) in str(e.value) and "record 1" in str(e.value) and "field 'answer'" in str(e.value)
    p.write_text(json.dumps([{"question": "Q?", "answer": "B"}]))
    with pytest.raises(DataError, match="record 0, field 'choices': missing"):
        G.check_task_data(p, ["question", "choices", "answer"], "xke_mmlu")
    q = tmp_path / "qa.jsonl"
    q.write_text('{"question": "Q?", "answer": ["x", "y"]}\n{"question": "Q?", "answer": 3}\n')
    with pytest.raises(DataError, match="record 1, field 'answer'"):
        G.check_task_data(q, ["question", "answer"], "xke_qa_en")
    q.write_text('{"question": "Q?", "answer": "x"}\nnot json\n')
    with pytest.raises(DataError, match="at line 2"):
        G.check_task_data(q, ["question", "answer"], "xke_qa_en")


def test_primary_score_and_table_3_layout():
    r = {"alias": "t", "acc,none": 0.75, "acc_stderr,none": "N/A", "acc_norm,none": 0.5}
    assert G.primary_score(r, {"metric_list": [{"metric": "acc"}]}) == ("acc", 75.0)
    assert G.primary_score(r, {"metric_list": [{"metric": "acc_norm"}]}) == ("acc_norm", 50.0)
    result = {"tasks": {"b_zh": {"lang": "zh", "metric": "acc"}, "a_en": {"lang": "en", "metric": "acc"}},
              "base": {"scores": {"a_en": {"score": 80.0}, "b_zh": {"score": 60.0}}, "avg": 70.0},
              "runs": [{"method": "memit", "n_edits": 100, "protocol": "sequential",
                        "scores": {"a_en": {"score": 40.0}, "b_zh": {"score": 50.0}}, "avg": 45.0,
                        "delta": {"a_en": -40.0, "b_zh": -10.0}, "delta_avg": -25.0,
                        "edits": {"reliability": 90.0, "generality": 80.0, "locality": 55.5,
                                  "n_locality_skipped": 3}}]}
    md = G.render_table(result)
    assert "| Model | a_en (en) | b_zh (zh) | avg |" in md          # en columns before zh, avg last
    assert "| base (no edits) | 80.00 | 60.00 | 70.00 |" in md
    assert "| memit, 100 edits (sequential) | 40.00 | 50.00 | 45.00 |" in md
    assert "| Δ | -40.00 | -10.00 | -25.00 |" in md
    assert "| memit, 100 edits | 90.00 | 80.00 | 55.50 | 3 |" in md
    assert G.task_lang("cmmlu_anatomy", {}) == "zh" and G.task_lang("x", {"metadata": {"lang": "de"}}) == "de"


# ------------------------------------------------------------------------------- the wrapper
class _FakeContext:
    """Stands for an in-context method: an edit about 'Kolo' goes in front of prompts that mention it."""

    kind = "context"

    def descriptors_for(self, q):
        return ["edit"] if "Kolo" in q.prompt else []

    def render(self, edits, q):
        return f"[{q.lang}] Kolo is new.\n{q.prompt}"


def test_lm_wrapper_renders_requests_as_xke_does(world):
    from lm_eval.api.instance import Instance

    import xke

    lm = xke.load(f"world:{world}", device="cpu")
    fmt = G._prompt_formatter(lm.tokenizer, "auto")
    assert fmt.use_chat  # the world model has a chat template
    h = G.make_lm(lm.model, lm.tokenizer, formatter=fmt, method=_FakeContext(), task_langs={"t_zh": "zh"})
    assert h.render("Where is Kolo?", "t_zh") == fmt.format("[zh] Kolo is new.\nWhere is Kolo?")
    assert h.render("Where is Paris?", "t") == fmt.format("Where is Paris?")
    assert h.render("科洛在哪里？Kolo", None) == fmt.format("[zh] Kolo is new.\n科洛在哪里？Kolo")  # CJK: zh
    assert h.with_edits == {"Where is Kolo?", "科洛在哪里？Kolo"} and len(h.seen) == 3
    raw = G._prompt_formatter(lm.tokenizer, "raw")
    assert G.make_lm(lm.model, lm.tokenizer, formatter=raw).render("Q: x\nAnswer:", None) == "Q: x\nAnswer:"
    # a loglikelihood request is scored on the rendered prompt
    req = Instance("loglikelihood", {}, ("Where is Paris?", " Kolo"), 0, ("t", 0, 1))
    (ll, _greedy), = h.loglikelihood([req], disable_tqdm=True)
    assert req.args[0] == fmt.format("Where is Paris?")
    ids = lm.tokenizer(req.args[0] + " Kolo", add_special_tokens=False)["input_ids"]
    n_ctx = len(lm.tokenizer(req.args[0], add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(torch.tensor([ids])).logits[0].float(), -1)
    want = sum(float(logp[i - 1, ids[i]]) for i in range(n_ctx, len(ids)))
    assert ll == pytest.approx(want, abs=1e-3)


# ------------------------------------------------------------------------------- xke general end to end
def _layers0(tmp_path) -> str:
    p = tmp_path / "memit.yaml"
    p.write_text("layers: [0]\n")   # the memit world preset's advice for the 2-layer tiny world
    return str(p)


@pytest.mark.slow
def test_memit_100_sequential_edits_drop_general_ability_xkde_retrieve_does_not(world, tmp_path, capsys):
    import xke

    lm = xke.load(f"world:{world}", device="cpu")
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    out = tmp_path / "g"
    spec = G.GeneralSpec(model=f"world:{world}", out=str(out), methods=["memit", "xkde"], n_edits=[100],
                         configs={"memit": _layers0(tmp_path)}, test_langs=["en"])
    res = G.run_general(spec, loaded=lm, progress=False, log=lambda m: None)
    # the model in memory comes back unedited
    assert all(torch.equal(before[k], v) for k, v in lm.model.state_dict().items())
    assert set(res["tasks"]) == {f"xke_world_{k}_{lg}" for k in ("mc", "qa", "heldout") for lg in ("en", "zh")}
    base = res["base"]
    assert base["avg"] > 80   # the tiny world model knows its unedited facts
    runs = {r["method"]: r for r in res["runs"]}
    memit, xkde = runs["memit"], runs["xkde"]
    assert memit["n_edits"] == xkde["n_edits"] == 100
    # the world tasks ask only about facts none of the 100 edits changes
    n_facts = json.loads((Path(world) / "report.json").read_text())["facts"]
    assert all(s["n"] == n_facts - 100 for s in base["scores"].values())
    assert memit["delta_avg"] <= -20, memit          # measured: -65 points
    assert xkde["delta_avg"] >= -10, xkde            # measured: about -3 (retrieved edits on some prompts)
    assert xkde["delta_avg"] > memit["delta_avg"] + 20
    assert 0 < xkde["prompts_with_edits"]["with_edits"] < xkde["prompts_with_edits"]["prompts"]
    # the same through the command line: resumed from OUT (nothing recomputed), the table printed
    rc = main(["general", "--model", f"world:{world}", "--methods", "memit,xkde", "--n-edits", "100",
               "--config", f"memit={_layers0(tmp_path)}", "--test-langs", "en", "--out", str(out), "--quiet"])
    assert rc == 0
    assert json.loads((out / "general.json").read_text())["runs"] == res["runs"]
    printed = capsys.readouterr().out
    assert "| memit, 100 edits (sequential) |" in printed and "| Δ |" in printed


def _mmlu_records(world) -> list[dict]:
    from xke.world.world import load_world

    w = load_world(world)
    recs = []
    for i, f in enumerate(w.all_facts()[:6]):
        rows = G.world_task_rows(w, "en", set())["mc"][i]
        recs.append({"question": rows["question"], "choices": rows["choices"], "answer": "ABCD"[rows["answer"]]})
    return recs


def _letter_accuracy(world, recs) -> float:
    """MMLU accuracy computed here by hand: log-likelihood of ' A'..' D' after the chat-formatted prompt."""
    import xke
    from xke.models.prompts import PromptFormatter

    lm = xke.load(f"world:{world}", device="cpu")
    fmt = PromptFormatter(lm.tokenizer, mode="chat")
    ok = 0
    for r in recs:
        text = r["question"].strip() + "".join(f"\n{L}. {c}" for L, c in zip("ABCD", r["choices"])) + "\nAnswer:"
        ctx = fmt.format(text)
        n_ctx = len(lm.tokenizer(ctx, add_special_tokens=False)["input_ids"])
        scores = []
        for L in "ABCD":
            ids = lm.tokenizer(ctx + " " + L, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(lm.model(torch.tensor([ids])).logits[0].float(), -1)
            scores.append(sum(float(logp[i - 1, ids[i]]) for i in range(n_ctx, len(ids))))
        ok += "ABCD"[max(range(4), key=scores.__getitem__)] == r["answer"]
    return round(100.0 * ok / len(recs), 2)


def test_standard_mmlu_format_task_from_a_local_json(world, tmp_path):
    recs = _mmlu_records(world)
    data = tmp_path / "mmlu.json"
    data.write_text(json.dumps(recs))
    out = tmp_path / "g"
    args = ["general", "--model", f"world:{world}", "--methods", "memit", "--protocol", "batch",
            "--tasks", "xke_mmlu", "--task-data", f"xke_mmlu={data}", "--test-langs", "en", "--out", str(out), "--quiet"]
    assert main(args + ["--n-edits", "2"]) == 0
    res = json.loads((out / "general.json").read_text())
    s = res["base"]["scores"]["xke_mmlu"]
    assert s["metric"] == "acc" and s["n"] == len(recs) and s["lang"] == "en"
    assert s["score"] == _letter_accuracy(world, recs)
    cfg = (out / "tasks" / "xke_mmlu.yaml").read_text()
    assert str(data.resolve()) in cfg and "doc_to_choice" in cfg   # the config lm-eval ran, data filled in
    # batch: both edits in one step
    assert res["runs"][0]["batch_size"] == 2
    assert json.loads((out / "memit" / "n2" / "eval" / "spec.json").read_text())["batch_size"] == 2
    # adding a point to the same OUT computes only that one (n2 is reused), and draws the curve
    n2 = out / "memit" / "n2" / "general.json"
    before = n2.stat().st_mtime_ns
    assert main(args + ["--n-edits", "1,2"]) == 0
    res = json.loads((out / "general.json").read_text())
    assert [r["n_edits"] for r in res["runs"]] == [1, 2] and n2.stat().st_mtime_ns == before
    assert (out / "degradation.png").stat().st_size > 0


def test_bad_task_data_and_missing_dataset_are_one_line_errors(world, tmp_path, capsys):
    bad = tmp_path / "mmlu.json"
    bad.write_text(json.dumps([{"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": "E"}]))
    rc = main(["general", "--model", f"world:{world}", "--tasks", "xke_mmlu", "--task-data", f"xke_mmlu={bad}",
               "--n-edits", "1", "--out", str(tmp_path / "a"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{bad}, record 0, field 'answer'" in err
    rc = main(["general", "--model", f"world:{world}", "--tasks", "xke_mmlu", "--n-edits", "1",
               "--out", str(tmp_path / "b"), "--quiet"])
    assert rc == 2 and "--task-data xke_mmlu=PATH" in capsys.readouterr().err
    inc = tmp_path / "inc"
    inc.mkdir()
    (inc / "hub.yaml").write_text("task: hub_task\ndataset_path: xke-test/no-such-dataset\ntest_split: test\n"
                                  "output_type: multiple_choice\ndoc_to_text: q\ndoc_to_choice: [a, b]\n"
                                  "doc_to_target: 0\n")
    rc = main(["general", "--model", f"world:{world}", "--tasks", "hub_task", "--include-path", str(inc),
               "--n-edits", "1", "--out", str(tmp_path / "c"), "--quiet"])
    err = capsys.readouterr().err
    line, = [x for x in err.splitlines() if "xke: error" in x]   # one line, no traceback
    assert rc == 2 and "hub_task" in line and "xke-test/no-such-dataset" in line and "offline" in line
    assert "Traceback" not in err


@pytest.mark.slow
def test_recipe_eval_stage_runs_general_when_asked(world, tmp_path):
    from xke.eval.general import general_brief
    from xke.train.recipe import EvalConfig, general_spec

    ecfg = EvalConfig(general_methods=["xkde"], general_edits=[1, 2])
    ev = general_brief(general_spec(str(Path(world) / "model"), Path(world), ecfg, tmp_path / "g", ["en"]))
    assert [(r["method"], r["n_edits"]) for r in ev["runs"]] == [("xkde", 1), ("xkde", 2)]
    assert ev["base_avg"] > 80 and all(r["delta_avg"] is not None for r in ev["runs"])
    assert (tmp_path / "g" / "degradation.png").stat().st_size > 0   # two points: a curve
