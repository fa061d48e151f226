"""Evaluation profiles: each reproduces its reference's per-record definitions.

The headline test runs ``xke eval --profile xkde-release`` on the first 50 Bi-ZsRE records with a small
trained ChatML model and compares every per-record reliability, generality, locality and portability value
with an independent, literal transcription of the released X-KDE ``eval/eval.py`` (plain loops over
``model(...).logits``, the release's own prompt strings, no xke code).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from xke.data.loaders import write_jsonl
from xke.data.schema import EditCase, LangView
from xke.eval.runner import EvalSpec, run_eval

N_RECORDS = 50

QWEN_STYLE_TEMPLATE = (
    "{% for m in messages %}"
    "{% if loop.first and m['role'] != 'system' %}<|im_start|>system\nYou are a tiny test model.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chatml_tokenizer():
    """Byte-level BPE (no merges) with ChatML special tokens, no BOS (as Qwen's), a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate(specials)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                   additional_special_tokens=specials[1:])
    fast.chat_template = QWEN_STYLE_TEMPLATE
    return fast


def _release_template(prompt, target_new, question, edit_language):
    """The release's knowledge_edit_template, transcribed."""
    if edit_language == 'en':
        return "Please acknowledge the updated information provided below and respond to the subsequent query in English.\n\n[Updated Information]:\n" \
            + prompt + " " + target_new + "\n\n[Query]:\n" + question
    return "Please acknowledge the updated information provided below and respond to the subsequent query in Chinese.\n\n[Updated Information]:\n" \
        + prompt + " " + target_new + "\n\n[Query]:\n" + question


def _release_icl_lm_eval(model, tokenizer, target, x, neighborhood=False):
    """The release's icl_lm_eval, 'qwen' branch (every model except Llama-2), transcribed (CPU, no_grad)."""
    target_ids = tokenizer(target, return_tensors='pt')['input_ids']
    encodings = tokenizer(f'<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{x}<|im_end|>\n<|im_start|>assistant\n{target}<|im_end|>', return_tensors='pt')
    with torch.no_grad():
        logits = model(input_ids=encodings['input_ids'], attention_mask=encodings['attention_mask']).logits
    ans = torch.argmax(logits, dim=-1)[:, -(target_ids.size(1) + 2):-2].squeeze()
    if neighborhood:
        return ans.squeeze().detach().cpu().numpy().tolist()
    return torch.mean((ans == target_ids.to(ans.device).squeeze()).float(), dim=-1).detach().cpu().numpy().tolist()


def release_record_metrics(model, tok, record, source, target):
    """Per-record values exactly as the release's main() computes them."""
    rewrite = _release_icl_lm_eval(model, tok, record[target]["alt"],
                                   _release_template(record[source]["src"], record[source]["alt"],
                                                     record[target]["src"], target))
    rephrase = _release_icl_lm_eval(model, tok, record[target]["alt"],
                                    _release_template(record[source]["src"], record[source]["alt"],
                                                      record[target]["rephrase"], target))
    pre = _release_icl_lm_eval(model, tok, record[target]['loc_ans'], record[target]['loc'], neighborhood=True)
    post = _release_icl_lm_eval(model, tok, record[target]['loc_ans'],
                                _release_template(record[source]["src"], record[source]["alt"],
                                                  record[target]['loc'], target), neighborhood=True)
    if type(pre) is not list:
        pre = [pre, ]
    if type(post) is not list:
        post = [post, ]
    loc = np.mean(np.equal(pre, post))
    port = _release_icl_lm_eval(model, tok, record[target]['portability']['New Answer'],
                                _release_template(record[source]["src"], record[source]["alt"],
                                                  record[target]['portability']['New Question'], target))
    return {"reliability": rewrite, "generality": rephrase, "locality": float(loc), "portability": port}


@pytest.fixture(scope="module")
def chatml_model(tmp_path_factory, shared_data):
    """A tiny Qwen2 trained for a few steps on X-KDE prompts of the first records (so its argmax varies)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    out = tmp_path_factory.mktemp("chatml-model")
    tok = chatml_tokenizer()
    cfg = AutoConfig.for_model("qwen2", vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                               max_position_embeddings=2048, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    recs = json.loads((shared_data / "bizsre" / "test.json").read_text(encoding="utf-8"))[:N_RECORDS]
    texts = []
    for r in recs[:24]:
        for lang in ("en", "zh"):
            x = _release_template(r["en"]["src"], r["en"]["alt"], r[lang]["src"], lang)
            texts.append(tok.apply_chat_template([{"role": "user", "content": x},
                                                  {"role": "assistant", "content": r[lang]["alt"]}], tokenize=False))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    g = torch.Generator().manual_seed(0)
    for step in range(12):
        idx = torch.randperm(len(texts), generator=g)[:8].tolist()
        enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def _per_record(out: Path) -> dict[str, dict[str, dict[str, float]]]:
    """case_id -> test lang -> kind -> value, from an xke run's cases.jsonl."""
    res: dict = {}
    for line in (out / "cases.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if r.get("type") != "unit":
            continue
        for cr in r["results"]:
            for q in cr["queries"]:
                v = q["loc_acc"] if q["kind"] == "locality" else q["tf_acc"]
                res.setdefault(cr["case_id"], {}).setdefault(q["lang"], {})[q["kind"]] = v
    return res


def test_xkde_release_profile_matches_released_eval_per_record(chatml_model, shared_data, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = shared_data / "bizsre" / "test.json"
    out = tmp_path / "run"
    spec = EvalSpec(model=str(chatml_model), out=str(out), method="xkde", bench="bizsre", data=str(data),
                    edit_lang="en", test_langs=["en", "zh"], limit=N_RECORDS, profile="xkde-release",
                    device="cpu", dtype="float32")
    m = run_eval(spec, progress=False)
    assert m["profile"] == "xkde-release" and json.loads((out / "spec.json").read_text())["profile"] == "xkde-release"
    ours = _per_record(out)

    tok = AutoTokenizer.from_pretrained(chatml_model)
    tok.pad_token_id = tok.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(chatml_model, dtype=torch.float32).eval()
    records = json.loads(data.read_text(encoding="utf-8"))[:N_RECORDS]
    distinct = set()
    release = {}
    for i, rec in enumerate(records):
        for target in ("en", "zh"):
            ref = release[i, target] = release_record_metrics(model, tok, rec, "en", target)
            got = ours[f"bizsre-{i}"][target]
            for kind, v in ref.items():
                assert got[kind] == pytest.approx(v, abs=1e-6), (i, target, kind, got[kind], v)
                distinct.add((kind, round(v, 4)))
    # the comparison is not trivial: the values vary across records
    assert len({v for k, v in distinct if k == "locality"}) > 3
    assert len({v for k, v in distinct if k == "reliability"}) > 3
    # the release's printed aggregates (Edit Success, Locality, ...) are the metrics.json figures
    for target in ("en", "zh"):
        for kind, key in (("reliability", "tf_acc"), ("locality", "loc_acc"), ("portability", "tf_acc")):
            printed = round(sum(release[i, target][kind] for i in range(N_RECORDS)) / N_RECORDS * 100, 2)
            assert m["by_test_lang"][target][kind][key] == pytest.approx(printed, abs=0.011)


# --- hand-computed values of each profile's definition, on a model that copies its input ------------------
class CopyLM(torch.nn.Module):
    """At every position the argmax is the input token itself ("the next token repeats this one")."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids=None, attention_mask=None, past_key_values=None, **kw):
        from types import SimpleNamespace
        seen = input_ids if past_key_values is None else torch.cat([past_key_values, input_ids], dim=1)
        return SimpleNamespace(logits=torch.nn.functional.one_hot(input_ids, self.vocab).float(),
                               past_key_values=seen)


def _hand_case(tmp_path) -> str:
    en = LangView(subject="Q", prompt="Q?", target_new="aab", locality_prompt="L?", locality_answer="cd",
                  locality_prefix="nq question: ", portability_prompt="P?", portability_answer="ef")
    return str(write_jsonl(tmp_path / "hand.jsonl", [EditCase("h0", {"en": en})]))


def _run_copy(tmp_path, profile, method="none"):
    from xke.models.loading import LoadedModel

    tok = chatml_tokenizer()
    lm = LoadedModel(model=CopyLM(len(tok)), tokenizer=tok, path=Path("copy"), name="copy")
    spec = EvalSpec(model="copy", out=str(tmp_path / profile), method=method, data=_hand_case(tmp_path),
                    profile=profile, template="plain", max_new_tokens=4)
    m = run_eval(spec, loaded=lm, progress=False)
    return m, {q["kind"]: q for q in _unit_queries(tmp_path / profile)}


def _unit_queries(out):
    for line in (out / "cases.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if r.get("type") == "unit":
            return r["results"][0]["queries"]


def test_bizsre_profile_hand_computed(tmp_path):
    """Bi-ZsRE: the model reads "Q? aab" (question, a space, the answer); bytes Q ? ␠ a a b.
    Teacher-forced argmax at the answer positions = the previous byte: "? aa" vs " aab".
    tf_acc = 1/4 (only the second a); F1 over byte tokens [?,␠,a,a] vs [␠,a,a,b] = 3 common -> P = R = 3/4;
    EM 0. Locality forces the dataset's "cd" after the RAW question "nq question: L?" and compares post- with
    pre-edit argmax: the unedited model agrees with itself (loc_* = 1)."""
    m, q = _run_copy(tmp_path, "bizsre")
    rel = q["reliability"]
    assert rel["tf_acc"] == pytest.approx(0.25) and rel["tf_f1"] == pytest.approx(0.75) and rel["tf_em"] == 0.0
    assert rel["pred_tf"] == "? aa" and "f1" not in rel  # no generation in this profile
    loc = q["locality"]
    assert (loc["loc_acc"], loc["loc_f1"], loc["loc_em"]) == (1.0, 1.0, 1.0) and "tf_acc" not in loc
    assert loc["pred_tf"] == "? c"  # forced " cd" after "...L?": argmax = previous bytes
    # portability "P? ef": argmax "? e" vs " ef" -> tf_acc 0, F1 2/3
    assert q["portability"]["tf_acc"] == 0.0 and q["portability"]["tf_f1"] == pytest.approx(2 / 3)
    assert m["profile"] == "bizsre" and m["by_test_lang"]["en"]["locality"] == {
        "loc_acc": 100.0, "loc_f1": 100.0, "loc_em": 100.0}
    assert set(m["metric_definitions"]) >= {"tf_acc", "tf_f1", "tf_em", "loc_acc", "loc_f1", "loc_em"}


def test_xke_profile_hand_computed(tmp_path):
    """xke (plain template): prompt "Q: Q?\\nA:", answer " aab" -> same 1/4 accuracy; greedy generation of the
    copy model repeats ':' forever -> generated answer "::::" (4 tokens), F1 0 vs "aab"; locality forces the
    model's own answer (tf_acc, not loc_acc) and agrees with itself."""
    m, q = _run_copy(tmp_path, "xke")
    rel = q["reliability"]
    assert rel["tf_acc"] == pytest.approx(0.25) and rel["pred"] == "::::" and rel["f1"] == 0.0
    assert q["locality"]["tf_acc"] == 1.0 and "loc_acc" not in q["locality"]
    assert m["profile"] == "xke" and set(m["by_test_lang"]["en"]["locality"]) == {"tf_acc", "f1", "em", "tf_f1",
                                                                                   "tf_em"}


def test_profile_encoders_hand_computed():
    from xke.eval.profiles import encode_bare, encode_release_chatml, encode_release_llama2

    tok = chatml_tokenizer()
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    # release ChatML: reads prompt + target + <|im_end|>; compares argmax[-(T+2):-2] with tok(target)
    p, fed, cmp = encode_release_chatml(tok, "X\n", "ab", "en")
    assert p == ids("X\n") and fed == ids("ab") and cmp == ids("ab") and im_end not in fed
    # release Llama-2: reads ' [INST] x [/INST] ab'; argmax[-T:-1] vs tok(target)[1:] (its BOS, here: the 'a')
    p, fed, cmp = encode_release_llama2(tok, " [INST] x [/INST]", "ab", "en")
    assert fed == ids("b") and cmp == ids("b") and p == ids(" [INST] x [/INST] a")
    # EasyEdit / Bi-ZsRE: question, a space, the answer; even for Chinese
    p, fed, cmp = encode_bare(tok, "问?", "北京", "zh")
    assert p == ids("问?") and fed == ids(" 北京") == cmp


def test_release_formatter_strings(tmp_path):
    from xke.eval.profiles import get_profile, make_formatter

    tok = chatml_tokenizer()
    rel = make_formatter(get_profile("xkde-release"), tok, model_name="/models/qwen2.5")
    assert rel.format("hi") == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi"
                                "<|im_end|>\n<|im_start|>assistant\n")
    assert make_formatter(get_profile("xkde-release"), tok, model_name="/m/llama2-7b-chat").format("hi") == \
        " [INST] hi [/INST]"
    # xke: the tokenizer's own template (its default system prompt) unless --system-prompt is given
    assert "You are a tiny test model." in make_formatter(get_profile("xke"), tok).format("hi")
    own = make_formatter(get_profile("xke"), tok, system_prompt="Be brief.").format("hi")
    assert own.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    with pytest.raises(Exception, match="unknown evaluation profile"):
        get_profile("nope")


def test_cli_profile_and_system_prompt_recorded(tmp_path, capsys):
    from xke.cli import main

    data = _hand_case(tmp_path)
    out = tmp_path / "cli"
    rc = main(["--threads", "1", "eval", "--model", "tiny-llama", "--data", data, "--out", str(out), "--profile",
               "bizsre", "--system-prompt", "Be brief.", "--quiet"])
    assert rc == 0
    spec = json.loads((out / "spec.json").read_text())
    m = json.loads((out / "metrics.json").read_text())
    assert (spec["profile"], spec["system_prompt"]) == ("bizsre", "Be brief.")
    assert (m["profile"], m["system_prompt"]) == ("bizsre", "Be brief.")
    assert "loc_acc" in m["by_test_lang"]["en"]["locality"] and "Locality (loc_ans)" in capsys.readouterr().out
    # resuming with another profile is refused (different quantities)
    rc = main(["eval", "--model", "tiny-llama", "--data", data, "--out", str(out), "--quiet"])
    assert rc == 2 and "profile" in capsys.readouterr().err
