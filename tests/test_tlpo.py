"""TL-PO: pair construction, scorers, language codes, form errors, and a tiny preference step."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from xke.train.sampling import SamplingConfig, clean_samples, end_token_ids, sample_for_rows
from xke.train.scorers import (LightScorer, form_error_counts, form_errors, script_share, score_records, token_f1, translation_code)
from xke.train.tlpo import TlpoConfig, build_pairs, check_pair_lengths, make_po_trainer, split_pairs


def _rec(pid, samples, scores, ref="巴黎", ref_score=1.0):
    return {"prompt_id": pid, "prompt": [{"role": "user", "content": f"{pid}: 鲍勃出生在哪里？"}], "reference": ref,
            "samples": samples, "scores": scores, "reference_score": ref_score, "tgt_lang": "zh",
            "src_lang": "en", "section": "cross", "scope": "in"}


def test_clean_samples_drops_duplicates_and_reference():
    assert clean_samples(["巴黎", " Paris", "Paris", "", "伦敦 "], "巴黎") == ["Paris", "伦敦"]


def test_pairs_reference_vs_flawed_and_sample_pairs():
    cfg = TlpoConfig(max_rejected_per_prompt=5, max_sample_pairs_per_prompt=5, min_gap=0.3)
    pairs = build_pairs([_rec("p1", ["Paris", "巴黎市", "伦敦"], [0.0, 0.8, 0.1])], cfg)
    ref = [p for p in pairs if p["kind"] == "reference"]
    smp = [p for p in pairs if p["kind"] == "samples"]
    assert all(p["chosen"][0]["content"] == "巴黎" for p in ref)
    assert {p["rejected"][0]["content"] for p in ref} == {"Paris", "巴黎市", "伦敦"}
    # sample pairs only where the scores differ by at least min_gap, higher one chosen
    assert {(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in smp} == {("巴黎市", "伦敦"),
                                                                                        ("巴黎市", "Paris")}
    assert all(p["chosen_score"] > p["rejected_score"] for p in pairs)
    # a sample as good as the reference is not "flawed"
    pairs = build_pairs([_rec("p2", ["巴黎 "], [1.0])], cfg)
    assert not [p for p in pairs if p["kind"] == "reference"]
    # caps
    cfg2 = TlpoConfig(max_rejected_per_prompt=1, max_sample_pairs_per_prompt=1, min_gap=0.3)
    pairs = build_pairs([_rec("p1", ["Paris", "巴黎市", "伦敦"], [0.0, 0.8, 0.1])], cfg2)
    assert len(pairs) == 2 and pairs[0]["rejected"][0]["content"] == "巴黎市"


def test_split_by_prompt():
    recs = [_rec(f"p{i}", ["Paris", "伦敦"], [0.0, 0.5]) for i in range(60)]
    pairs = build_pairs(recs, TlpoConfig())
    train, val = split_pairs(pairs, 0.2, seed=0)
    assert train and val
    assert not ({p["prompt_id"] for p in train} & {p["prompt_id"] for p in val})


def test_light_scorer_prefers_target_language_and_right_answer():
    s = LightScorer()
    ref = "巴黎"
    sc = s.score(["巴黎", "Paris", "巴黎市", "伦敦"], ref, "zh")
    assert sc[0] == 1.0 and sc[1] == 0.0 and 0 < sc[2] < 1 and sc[3] == 0.0
    assert s.score(["1987"], "1987年", "zh")[0] < s.score(["1987年"], "1987年", "zh")[0]
    # a Latin name that the zh reference itself contains is not penalised
    assert s.score(["Oslo"], "Oslo", "zh")[0] == 1.0
    assert s.score(["Paris"], "Paris", "en")[0] == 1.0 and s.score(["巴黎"], "Paris", "en")[0] == 0.0
    assert token_f1("the city of Paris", "Paris", "en") == pytest.approx(0.4)
    assert script_share("Москва", "ru") == 1.0 and script_share("Moscow", "ru") == 0.0


def test_score_records_adds_scores():
    recs = [_rec("p", ["Paris", "巴黎市"], None)]
    score_records(recs, LightScorer())
    assert recs[0]["reference_score"] == 1.0 and recs[0]["scores"][0] == 0.0


def test_form_errors():
    assert form_errors("1987", "1987年", "zh") == ["year_format"]
    assert form_errors("1987年", "1987年", "zh") == []
    assert form_errors("Paris", "巴黎", "zh") == ["wrong_script"]
    assert form_errors("Oslo", "Oslo", "zh") == []
    assert set(form_errors("1987年", "1987", "en")) == {"wrong_script", "year_format"}
    assert form_error_counts([("1987", "1987年"), ("Paris", "巴黎"), ("巴黎", "巴黎")], "zh") == {
        "wrong_script": 1, "year_format": 1, "any": 2}


def test_translation_codes_any_pair():
    assert translation_code("zh", "nllb") == "zho_Hans" and translation_code("cz", "nllb") == "ces_Latn"
    assert translation_code("du", "m2m100") == "nl" and translation_code("cs", "m2m100") == "cs"
    assert translation_code("th", "nllb") == "tha_Thai" and translation_code("de", "marian") == "de"
    from xke.errors import ConfigError, XkeError

    with pytest.raises(ConfigError):
        translation_code("en", "t5")
    with pytest.raises(XkeError):
        translation_code("xx", "nllb")


def test_seq2seq_scorer_reward_is_inverse_mean_ce(tmp_path):
    import torch
    from transformers import MarianConfig, MarianMTModel

    from xke.models.tiny import build_byte_tokenizer
    from xke.train.scorers import Seq2SeqScorer

    tok = build_byte_tokenizer(chat_template=None)
    cfg = MarianConfig(vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                       decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
                       pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                       decoder_start_token_id=tok.pad_token_id, forced_eos_token_id=None)
    torch.manual_seed(0)
    MarianMTModel(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    sc = Seq2SeqScorer(str(tmp_path), device="cpu")
    assert sc.family == "marian"
    samples = ["Paris", "London is big"]
    got = sc.score(samples, "巴黎", "zh", "en")
    # by hand: 1 / mean CE of the reference tokens given each sample
    for s, g in zip(samples, got):
        enc = sc.tok([s], text_target=["巴黎"], return_tensors="pt")
        with torch.inference_mode():
            out = sc.model(**enc)
        ce = torch.nn.functional.cross_entropy(out.logits[0], enc["labels"][0])
        assert g == pytest.approx(1.0 / ce.item(), rel=1e-4)
    assert sc.score([], "x", "zh") == []


@pytest.fixture(scope="module")
def tiny():
    from xke.train.xeit import load_for_training

    return load_for_training("tiny-llama")


def test_pair_length_check_warns_with_counts(tiny):
    _, tok, _ = tiny
    pairs = build_pairs([_rec("p1", ["Paris"], [0.0]), _rec("p2", ["x " * 300], [0.0])], TlpoConfig())
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        kept, info = check_pair_lengths(pairs, tok, 200, "drop")
    assert info["over_max_length"] == 1 and len(kept) == 1
    assert any("1 of 2 pairs exceed max_length=200" in str(x.message) for x in w)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["orpo", "dpo"])
def test_tiny_preference_step_runs_with_beta(tiny, tmp_path, algo):
    model, tok, _ = tiny
    pairs = build_pairs([_rec(f"p{i}", ["Paris", "伦敦"], [0.0, 0.5]) for i in range(4)], TlpoConfig())
    cfg = TlpoConfig(algo=algo, beta=0.25, max_steps=1, per_device_train_batch_size=2, warmup_steps=0,
                     max_length=256, learning_rate=1e-4)
    tok.padding_side = "right"
    tr = make_po_trainer(model, tok, pairs, None, cfg, tmp_path)
    assert tr.args.beta == 0.25 and tr.args.max_length == 256
    res = tr.train()
    assert res.global_step == 1 and res.training_loss == res.training_loss  # not NaN


def test_sampling_drops_reference_copies(tiny):
    model, tok, _ = tiny
    assert tok.convert_tokens_to_ids("<|end|>") in end_token_ids(tok)
    rows = [{"messages": [{"role": "user", "content": "Where?"}, {"role": "assistant", "content": "Paris"}],
             "fact_id": "f", "id": 0, "tgt_lang": "en", "src_lang": "en", "section": "mono", "scope": "in",
             "with_edit": True}]
    recs = sample_for_rows((model, tok), rows, SamplingConfig(n=3, max_new_tokens=4, backend="transformers"))
    assert recs[0]["n_raw"] == 3 and len(recs[0]["samples"]) <= 3 and "Paris" not in recs[0]["samples"]


def _edit_jsonl(path, n=12):
    from xke.data.schema import EditCase, LangView

    cases = []
    for i in range(n):
        cases.append(EditCase(case_id=f"c{i}", views={
            "en": LangView(subject=f"Bob{i}", prompt=f"Where was Bob{i} born?", target_new=f"Paris{i}",
                           target_old=f"London{i}", paraphrases=[f"Bob{i} was born in which city?"],
                           locality_prompt=f"Where was Ann{i} born?", locality_answer=f"Rome{i}"),
            "zh": LangView(subject=f"鲍勃{i}", prompt=f"鲍勃{i}出生在哪里？", target_new=f"巴黎{i}", target_old=f"伦敦{i}",
                           locality_prompt=f"安{i}出生在哪里？", locality_answer=f"罗马{i}")},
            meta={"split": "train"}))
    path.write_text("\n".join(c.to_json() for c in cases) + "\n")
    return path


@pytest.mark.slow
def test_recipe_end_to_end_and_resume(tmp_path):
    """data -> XE-IT -> sampling -> scoring -> pairs -> ORPO -> eval on tiny-llama; a rerun skips every stage."""
    from xke.train.recipe import load_train_config, run_recipe

    src = _edit_jsonl(tmp_path / "edits.jsonl")
    cfg = load_train_config("toy", overrides={
        "data": {"val_fraction": 0.2, "queries_per_pair": 1, "oos_per_pair": 1},
        "xeit": {"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1},
        "sampling": {"n": 2, "max_new_tokens": 4, "max_prompts": 6, "backend": "transformers"},
        "tlpo": {"max_steps": 1, "per_device_train_batch_size": 2, "warmup_steps": 0, "val_fraction": 0.0},
        "eval": {"max_new_tokens": 4}})
    logs = []
    res = run_recipe("tiny-llama", [f"jsonl:{src}"], tmp_path / "run", cfg, log=logs.append)
    out = tmp_path / "run"
    for p in ("data/train.jsonl", "xeit/config.json", "samples.jsonl", "scored.jsonl", "pairs/train.jsonl",
              "model/config.json", "model/README.md", "eval.json"):
        assert (out / p).exists(), p
    assert res["tlpo"]["beta"] == cfg.tlpo.beta and res["xeit"]["mode"] == "assistant_only"
    card = (out / "model" / "README.md").read_text()
    assert "Table 8" in card and "ORPO" in card and "tiny-llama" in card
    assert set(res["eval"]) >= {"base", "xeit", "final"}
    # evaluated through `xke eval --method xkde` (gold) on the validation facts, one run per edit language
    m = json.loads((out / "eval" / "final" / "zh" / "metrics.json").read_text())
    assert m["method"] == "xkde" and m["n_cases"] == res["eval"]["final"]["n_cases"] > 0
    assert set(res["eval"]["final"]["pairs"]) == {"en->en", "en->zh", "zh->en", "zh->zh"}
    assert res["eval"]["final"]["pairs"]["zh->en"]["reliability"] == m["by_test_lang"]["en"]["reliability"]["em"]
    logs.clear()
    run_recipe("tiny-llama", [f"jsonl:{src}"], out, cfg, log=logs.append)
    assert sum("skipped" in l for l in logs) == 7 and not any("running" in l for l in logs)
    # a changed TL-PO setting redoes TL-PO (and eval) only
    cfg.tlpo.beta = 0.2
    logs.clear()
    run_recipe("tiny-llama", [f"jsonl:{src}"], out, cfg, log=logs.append)
    ran = [l.split("]")[0].strip("[") for l in logs if "running" in l]
    assert ran == ["tlpo", "eval"]


def test_cli_build_xeit(tmp_path, capsys):
    from xke.cli import main

    src = _edit_jsonl(tmp_path / "edits.jsonl", n=4)
    rc = main(["data", "build-xeit", "--source", f"jsonl:{src}", "--langs", "en,zh", "--out", str(tmp_path / "d")])
    assert rc == 0 and (tmp_path / "d" / "train.jsonl").exists()
    assert "in w/" in capsys.readouterr().out
    rc = main(["data", "build-xeit", "--source", "bizsre:/x", "--out", str(tmp_path / "e")])
    assert rc == 2


def test_heldout_cases_per_subject_and_gold_eval_through_the_runner(world, tmp_path):
    """``eval.per_subject`` reaches ``World.counterfactual_cases`` (more held-out cases per subject); the gold
    evaluation is ``xke eval --method xkde`` runs, one per edit language, whose em figures it reports."""
    from xke.config import from_dict
    from xke.errors import ConfigError
    from xke.eval.pairs import gold_pairs
    from xke.train.recipe import EvalConfig, heldout_cases, load_train_config
    from xke.train.scorers import form_error_counts
    from xke.world.world import load_world
    from xke.world.xeit_source import WorldSource

    w = load_world(world)
    n1 = len(w.counterfactual_cases(split="heldout", per_subject=1))
    n3 = len(w.counterfactual_cases(split="heldout", per_subject=3))
    assert n3 > n1
    cfg = load_train_config("toy", overrides={"eval": {"n_cases": 10_000, "per_subject": 3}})
    data = tmp_path / "heldout.jsonl"
    assert heldout_cases([WorldSource(f"world:{world}")], cfg, data, ["en"]) == n3
    cfg.eval.n_cases = 4
    assert heldout_cases([WorldSource(f"world:{world}")], cfg, data, ["en"]) == 4
    res = gold_pairs(f"world:{world}", data, ["en"], ["en"], tmp_path / "g", max_new_tokens=4,
                     check=form_error_counts)
    metrics = json.loads((tmp_path / "g" / "en" / "metrics.json").read_text())
    assert metrics["method"] == "xkde" and metrics["n_cases"] == 4 and res["n_cases"] == 4
    block = res["pairs"]["en->en"]
    assert block["reliability"] == metrics["by_test_lang"]["en"]["reliability"]["em"]
    assert set(block["form_errors"]) == {"wrong_script", "year_format", "any"} and len(block["examples"]) == 3
    assert from_dict(EvalConfig, {"per_subject": 5}).per_subject == 5
    with pytest.raises(ConfigError, match="per_subject"):
        from_dict(EvalConfig, {"per_subject": 0})


def test_validation_facts_become_edit_cases(tmp_path):
    """A non-world source: the recipe evaluates on the facts the data stage put in validation, as edit cases."""
    from xke.data.loaders import read_jsonl
    from xke.train.recipe import heldout_cases, load_train_config
    from xke.train.xeit_data import is_validation

    src = _edit_jsonl(tmp_path / "edits.jsonl")
    cfg = load_train_config("toy", overrides={"data": {"val_fraction": 0.2}})
    n = heldout_cases([f"jsonl:{src}"], cfg, tmp_path / "h.jsonl", ["en", "zh"])
    want = [f"jsonl:c{i}" for i in range(12) if is_validation(f"jsonl:c{i}", 0.2, cfg.data.seed)]
    cases = list(read_jsonl(tmp_path / "h.jsonl"))
    assert n == len(want) > 0 and [c.case_id for c in cases] == want
    i = int(want[0].split("c")[-1])
    v = cases[0].view("en")
    assert (v.prompt, v.target_new, v.paraphrases) == (f"Where was Bob{i} born?", f"Paris{i}",
                                                       [f"Bob{i} was born in which city?"])
    assert (v.locality_prompt, v.locality_answer) == (f"Where was Ann{i} born?", f"Rome{i}")


def test_recipe_records_the_world_of_a_world_model(world, tmp_path):
    """The recipe's output model names its toy world, so retrieve mode finds the world's retriever."""
    from xke.train.recipe import _mark_model
    from xke.world.xeit_source import WorldSource

    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"xke_world": True, "model_type": "llama"}))
    _mark_model(d, [f"jsonl:{tmp_path}/x.jsonl", WorldSource(f"world:{world}")])
    assert json.loads((d / "config.json").read_text())["xke_world_dir"] == str(Path(world).resolve())
    (d / "config.json").write_text(json.dumps({"model_type": "llama"}))       # not a world model: untouched
    _mark_model(d, [WorldSource(f"world:{world}")])
    assert "xke_world_dir" not in json.loads((d / "config.json").read_text())


def test_retrieve_eval_keeps_only_the_distractors_in_memory(world, tmp_path):
    """Retrieve-mode evaluation through the runner: each case's edit among N invented-person edits; the
    results come per edit -> test language in percent, and the memory holds exactly the N distractors after."""
    from xke.eval.pairs import retrieve_pairs
    from xke.memory.store import EditStore
    from xke.train.recipe import EvalConfig, _distractors, heldout_cases, load_train_config
    from xke.world.xeit_source import WorldSource

    cfg = load_train_config("toy", overrides={"eval": {"n_cases": 6, "per_subject": 1}})
    data = tmp_path / "heldout.jsonl"
    heldout_cases([WorldSource(f"world:{world}")], cfg, data, ["en", "zh"])
    res = retrieve_pairs(f"world:{world}", data, ["en"], ["en", "zh"], tmp_path / "r", max_new_tokens=4,
                         **_distractors(WorldSource(f"world:{world}"), ["en"], 30))
    assert res["n_cases"] == 6 and res["n_edits_in_memory"] == 31
    assert set(res["pairs"]) == {"en->en", "en->zh"}
    assert set(res["pairs"]["en->en"]) >= {"reliability", "generality", "locality"}
    assert all(0 <= v <= 100 for b in res["pairs"].values() for v in b.values())
    store = EditStore(tmp_path / "r" / "memory-en-30.sqlite")
    assert len(store) == 30 and all("distractors" in e.case_id for e in store.list())
    store.close()
    metrics = json.loads((tmp_path / "r" / "en-30" / "metrics.json").read_text())
    assert metrics["method"] == "xkde" and metrics["n_cases"] == 6
    with pytest.raises(ValueError, match="retrieve_distractors"):
        EvalConfig(retrieve_distractors=[-1]).validate()


def test_recipe_summary_prints_gold_and_retrieve_blocks():
    from xke.train.commands import eval_summary

    ev = {"final": {"pairs": {"en->zh": {"reliability": 75.0, "locality": 15.0, "form_errors": {"any": 1}}}},
          "final, retrieve, 1000 edits in memory": {"pairs": {"en->zh": {"reliability": 75.0, "locality": 98.0}}}}
    lines = eval_summary(ev)
    assert len(lines) == 2 and "wrong-form 1" in lines[0] and "loc 98.0" in lines[1] and "wrong-form" not in lines[1]
