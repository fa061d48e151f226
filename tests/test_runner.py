"""The evaluation runner: protocols, restore exactness, deltas, mix, resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from xke.data.loaders import write_jsonl
from xke.data.schema import EditCase, LangView
from xke.errors import ConfigError, DataError
from xke.eval.runner import EvalSpec, run_eval
from xke.methods import base as B

REPO = Path(__file__).resolve().parents[1]


def make_cases(n: int, split: bool = True) -> list[EditCase]:
    cases = []
    for i in range(n):
        en = LangView(subject=f"Person{i}", prompt=f"Where was Person{i} born?", target_new=f"City{i % 7}",
                      paraphrases=[f"Person{i} was born in which city?", f"Birthplace of Person{i}?"],
                      locality_prompt=f"What is the capital of Land{i}?", locality_answer=f"Cap{i}",
                      portability_prompt=f"Which country is Person{i}'s birthplace in?",
                      portability_answer=f"Land{i % 3}")
        zh = LangView(subject=f"人物{i}", prompt=f"人物{i}出生在哪里？", target_new=f"城市{i % 7}",
                      paraphrases=[f"人物{i}的出生地是？"], locality_prompt=f"国家{i}的首都是什么？",
                      locality_answer=f"首都{i}")
        meta = {"split": "heldout" if i % 2 else "train"} if split else {}
        cases.append(EditCase(f"c{i}", {"en": en, "zh": zh}, meta=meta))
    return cases


@pytest.fixture
def data(tmp_path):
    return str(write_jsonl(tmp_path / "cases.jsonl", make_cases(12)))


# --- a fake weight-editing method: adds a constant to one MLP matrix per request ---------------------------
PARAM = "model.layers.1.mlp.down_proj.weight"
APPLIED: list[list] = []


@dataclass
class FakeConfig(B.MethodConfig):
    scale: float = 0.05


@B.register_method
class FakeWeight(B.EditMethod):
    name = "fake-weight"
    kind = "weight"
    config_class = FakeConfig

    def apply(self, requests):
        APPLIED.append(list(requests))
        snap = B.WeightSnapshot(self.model, [PARAM])
        p = dict(self.model.named_parameters())[PARAM]
        with torch.no_grad():
            g = torch.Generator().manual_seed(len(requests))
            p.add_(torch.randn(p.shape, generator=g).to(p.dtype) * self.config.scale * len(requests))
        return snap


@dataclass
class CtxConfig(B.MethodConfig):
    mode: str = "unset"


@B.register_method
class FakeContext(B.EditMethod):
    name = "fake-context"
    kind = "context"
    config_class = CtxConfig

    def apply(self, requests):
        self.reqs = list(requests)
        return B.NoOpHandle()

    def prompt(self, query):
        facts = " ".join(f"{r.prompt} {r.target_new}." for r in getattr(self, "reqs", []))
        return self.formatter.format(f"{facts} {query.prompt}", query.style)


@pytest.fixture(autouse=True)
def _fake_methods(monkeypatch):
    monkeypatch.setitem(B.METHOD_MODULES, "fake-weight", __name__)
    monkeypatch.setitem(B.METHOD_MODULES, "fake-context", __name__)
    APPLIED.clear()


def spec(out, data, **kw):
    d = dict(model="tiny-llama", out=str(out), bench="jsonl", data=data, edit_lang="en", test_langs=["en", "zh"],
             device="cpu", max_new_tokens=4)
    d.update(kw)
    return EvalSpec.from_dict(d)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_none_single_metrics_shape(tiny_model, data, tmp_path):
    m = run_eval(spec(tmp_path / "o", data, limit=5), loaded=tiny_model, progress=False)
    out = tmp_path / "o"
    for f in ("metrics.json", "report.md", "heatmap.png", "cases.jsonl", "spec.json"):
        assert (out / f).exists(), f
    assert json.loads((out / "metrics.json").read_text()) == m
    assert set(m) >= {"method", "model", "bench", "edit_lang", "test_langs", "protocol", "batch_size", "n_cases",
                      "by_test_lang", "avg", "clm"}
    assert m["n_cases"] == 5 and m["test_langs"] == ["en", "zh"]
    en, zh = m["by_test_lang"]["en"], m["by_test_lang"]["zh"]
    assert set(en) == {"reliability", "generality", "locality", "portability"}
    assert "portability" not in zh  # no zh portability questions in the data
    # the unedited model agrees with itself
    assert en["locality"] == {"tf_acc": 100.0, "f1": 100.0, "em": 100.0, "tf_f1": 100.0, "tf_em": 100.0}
    tfs = [v["tf_acc"] for b in m["by_test_lang"].values() for v in b.values()]
    assert m["avg"] == round(sum(tfs) / len(tfs), 2)
    assert set(m["clm"]) == {"zh_score", "en_score", "trans"}
    lines = [json.loads(x) for x in (out / "cases.jsonl").read_text().splitlines()]
    assert sum(r["type"] == "pre" for r in lines) == 5 and sum(r["type"] == "unit" for r in lines) == 5


def test_single_restores_bit_identical_and_edits_change_answers(tiny_model, data, tmp_path):
    before = _state(tiny_model.model)
    m = run_eval(spec(tmp_path / "w", data, method="fake-weight", limit=4, config=None,
                      method_overrides={"scale": 0.5}), loaded=tiny_model, progress=False)
    after = _state(tiny_model.model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert len(APPLIED) == 4 and all(len(r) == 1 and r[0].lang == "en" for r in APPLIED)
    # a large perturbation changes the model's locality answers
    assert m["by_test_lang"]["en"]["locality"]["tf_acc"] < 100.0


def test_batch_deltas_and_save_edited(tiny_model, data, tmp_path):
    from safetensors.torch import load_file

    before = _state(tiny_model.model)
    out = tmp_path / "b"
    m = run_eval(spec(out, data, method="fake-weight", protocol="batch", batch_size=5, limit=10, save_deltas=True,
                      save_edited=str(tmp_path / "edited")), loaded=tiny_model, progress=False)
    assert m["n_cases"] == 10 and [len(r) for r in APPLIED] == [5, 5]
    assert all(torch.equal(before[k], v) for k, v in _state(tiny_model.model).items())
    d = load_file(str(out / "deltas.safetensors"))
    assert list(d) == [PARAM]
    g = torch.Generator().manual_seed(5)
    expected = 2 * (torch.randn(d[PARAM].shape, generator=g) * 0.05 * 5)
    assert torch.allclose(d[PARAM], expected, atol=1e-5)
    meta = json.loads((out / "deltas.json").read_text())
    assert meta["protocol"] == "batch" and meta["batch_size"] == 5 and meta["n"] == 10
    assert not (out / "deltas.partial.safetensors").exists()
    assert (tmp_path / "edited" / "config.json").exists() and (tmp_path / "edited" / "tokenizer_config.json").exists()


def test_sequential_deltas_final_minus_original_and_after_each(tiny_model, data, tmp_path):
    from safetensors.torch import load_file

    before = _state(tiny_model.model)
    out = tmp_path / "s"
    m = run_eval(spec(out, data, method="fake-weight", protocol="sequential", limit=4, save_deltas=True,
                      eval_after_each=True), loaded=tiny_model, progress=False)
    assert len(APPLIED) == 4
    assert all(torch.equal(before[k], v) for k, v in _state(tiny_model.model).items())  # undone at the end
    d = load_file(str(out / "deltas.safetensors"))[PARAM]
    g = torch.Generator().manual_seed(1)
    one = torch.randn(d.shape, generator=g) * 0.05
    assert torch.allclose(d, 4 * one, atol=1e-5)
    assert "after_each" in m and set(m["after_each"]["by_test_lang"]) == {"en", "zh"}
    lines = [json.loads(x) for x in (out / "cases.jsonl").read_text().splitlines()]
    assert sum(r["type"] == "final" for r in lines) == 4 and sum(r["type"] == "after_each" for r in lines) == 4


def test_locality_about_a_fact_edited_in_the_same_batch_is_left_out(tiny_model, tmp_path):
    cases = make_cases(4)
    # case 0's locality asks case 1's edit prompt (in zh: by meta, subject + relation)
    cases[0].views["en"].locality_prompt = cases[1].views["en"].prompt
    for i, c in enumerate(cases):
        c.meta.update(subject_id=f"p{i}", relation="birthplace")
    cases[2].meta["locality_subject_id"] = "p3"
    assert cases[1].fact_keys() & cases[0].locality_keys()
    assert cases[3].fact_keys() & cases[2].locality_keys() == {"fact:p3/birthplace"}
    data = str(write_jsonl(tmp_path / "c.jsonl", cases))

    def records(out):
        lines = [json.loads(x) for x in (out / "cases.jsonl").read_text().splitlines()]
        return {r["case_id"]: r for x in lines if x["type"] in ("unit", "final") for r in x["results"]}

    # batch of 4: cases 0 and 2 collide, 1 and 3 keep their locality
    m = run_eval(spec(tmp_path / "b", data, method="fake-weight", protocol="batch", batch_size=4), loaded=tiny_model,
                 progress=False)
    recs = records(tmp_path / "b")
    kinds = {cid: {q["kind"] for q in r["queries"]} for cid, r in recs.items()}
    assert "locality" not in kinds["c0"] and "locality" not in kinds["c2"]
    assert "locality" in kinds["c1"] and "locality" in kinds["c3"]
    assert recs["c0"].get("locality_skipped") and not recs["c1"].get("locality_skipped")
    assert m["n_locality_skipped"] == 2
    # batches of 2 ({0,1}, {2,3}): the same two collide; single edits: none does
    m2 = run_eval(spec(tmp_path / "b2", data, method="fake-weight", protocol="batch", batch_size=2),
                  loaded=tiny_model, progress=False)
    assert m2["n_locality_skipped"] == 2
    m1 = run_eval(spec(tmp_path / "s1", data, method="fake-weight"), loaded=tiny_model, progress=False)
    assert m1["n_locality_skipped"] == 0
    # sequential: every edit is in force at the final evaluation
    m3 = run_eval(spec(tmp_path / "sq", data, method="fake-weight", protocol="sequential"), loaded=tiny_model,
                  progress=False)
    assert m3["n_locality_skipped"] == 2
    assert "locality" not in {q["kind"] for q in records(tmp_path / "sq")["c2"]["queries"]}


def test_mix_two_requests_per_case_and_context_mode(tiny_model, data, tmp_path):
    m = run_eval(spec(tmp_path / "m", data, method="fake-weight", edit_lang="mix", protocol="batch", batch_size=3,
                      limit=3), loaded=tiny_model, progress=False)
    assert [sorted(r.lang for r in reqs) for reqs in APPLIED] == [["en", "en", "en", "zh", "zh", "zh"]]
    assert m["edit_lang"] == "mix" and m["clm"]["trans"] is not None
    run_eval(spec(tmp_path / "c", data, method="fake-context", mode="retrieve", limit=2), loaded=tiny_model,
             progress=False)
    from xke.methods.base import build_method_config
    assert build_method_config("fake-context", overrides={"mode": "retrieve"}).mode == "retrieve"


def test_split_filter_and_errors(tiny_model, data, tmp_path):
    m = run_eval(spec(tmp_path / "h", data, split="heldout", limit=3), loaded=tiny_model, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "h" / "cases.jsonl").read_text().splitlines()]
    assert m["n_cases"] == 3 and {r["case_ids"][0] for r in lines if r["type"] == "unit"} == {"c1", "c3", "c5"}
    nosplit = str(write_jsonl(tmp_path / "nosplit.jsonl", make_cases(3, split=False)))
    with pytest.raises(DataError, match="split"):
        run_eval(spec(tmp_path / "n", nosplit, split="train"), loaded=tiny_model, progress=False)
    # resuming into a directory with another spec is refused, naming the field
    with pytest.raises(ConfigError, match="limit"):
        run_eval(spec(tmp_path / "h", data, split="heldout", limit=4), loaded=tiny_model, progress=False)
    with pytest.raises(ConfigError, match="sequential"):
        spec(tmp_path / "z", data, eval_after_each=True)


def test_resume_skips_finished_and_cuts_torn_line(tiny_model, data, tmp_path):
    out = tmp_path / "r"
    m1 = run_eval(spec(out, data, limit=6), loaded=tiny_model, progress=False)
    lines = (out / "cases.jsonl").read_text().splitlines()
    # drop the last two units and leave a torn line, as a kill mid-write would
    (out / "cases.jsonl").write_text("\n".join(lines[:-2]) + "\n" + lines[-2][: len(lines[-2]) // 2])
    calls = []
    m2 = run_eval(spec(out, data, limit=6), loaded=tiny_model, progress=False, on_unit=calls.append)
    assert m2 == m1 and len(calls) == 2
    recs = [json.loads(x) for x in (out / "cases.jsonl").read_text().splitlines()]
    assert sorted(r["unit"] for r in recs if r["type"] == "unit") == list(range(6))


@pytest.mark.slow
def test_resume_after_sigkill_gives_same_metrics(tiny_model, data, tmp_path):
    big = str(write_jsonl(tmp_path / "big.jsonl", make_cases(40)))
    args = ["--model", "tiny-llama", "--method", "none", "--bench", "jsonl", "--data", big, "--edit-lang", "en",
            "--test-langs", "en,zh", "--device", "cpu", "--max-new-tokens", "8", "--quiet"]
    ref = tmp_path / "ref"
    run_eval(spec(ref, big, max_new_tokens=8, test_langs=["en", "zh"]), loaded=tiny_model, progress=False)
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "xke.cli", "--threads", "1", "eval", *args, "--out", str(out)]
    killed = False
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            f = out / "cases.jsonl"
            if f.exists() and f.read_text().count('"type": "unit"') >= 3:
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and not killed:
            proc.kill()
        proc.wait()
    assert killed and proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    n_before = (out / "cases.jsonl").read_text().count('"type": "unit"')
    assert n_before < 40
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "metrics.json").read_text()) == json.loads((ref / "metrics.json").read_text())
    units = [json.loads(x)["unit"] for x in (out / "cases.jsonl").read_text().splitlines() if '"type": "unit"' in x]
    assert sorted(units) == list(range(40))


def test_demo_on_tiny_world(tmp_path, capsys):
    from xke.cli import main

    rc = main(["demo", "--preset", "tiny", "--n", "3", "--methods", "none,fake-weight", "--out", str(tmp_path / "d"),
               "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| none | world |" in out and "| fake-weight | world |" in out and "en→zh" in out
    assert (tmp_path / "d" / "report.md").exists() and (tmp_path / "d" / "heatmap.png").exists()
    for el in ("en", "zh"):   # every row edits in en and in zh
        m = json.loads((tmp_path / "d" / "runs" / f"none-{el}" / "metrics.json").read_text())
        assert m["n_cases"] == 3 and m["model"].startswith("world:") and m["edit_lang"] == el
    held = [json.loads(x) for x in (tmp_path / "d" / "heldout.jsonl").read_text().splitlines()]
    assert len(held) == 3 and all(c["meta"]["split"] == "heldout" for c in held)
