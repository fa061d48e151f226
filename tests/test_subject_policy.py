"""An edit whose subject is not in its (translated) prompt: skip and count, edit at the last token, or fail."""

from __future__ import annotations

import json

import pytest

from xke.data.loaders import write_jsonl
from xke.data.schema import EditCase, EditRequest, LangView
from xke.errors import DataError
from xke.eval.runner import EvalSpec, run_eval
from xke.methods.weight.common import LocateConfig
from xke.methods.weight.subject import (requests_without_subject, subject_last_token,
                                        subject_not_found_policy)
from xke.models.prompts import PromptFormatter, encode_prompt


def test_policy_in_subject_last_token(tiny_model):
    tok = tiny_model.tokenizer
    text = PromptFormatter(tok).format("Wo wurde Christoph Kolumbus geboren?")
    ids = encode_prompt(tok, text)
    with pytest.raises(DataError, match="'Columbus' does not occur"):
        subject_last_token(tok, text, "Columbus", ids, case_id="c7", lang="de")  # default: fail
    with subject_not_found_policy("last"), pytest.warns(UserWarning, match="prompt's last token"):
        assert subject_last_token(tok, text, "Columbus", ids, case_id="c7", lang="de") == len(ids) - 1
    with subject_not_found_policy("last"):  # a subject that is there is found as usual
        i = subject_last_token(tok, text, "Kolumbus", ids)
    assert i < len(ids) - 1 and tok.decode(ids[i]) == "s"
    with pytest.raises(ValueError, match="skip, last, fail"):
        with subject_not_found_policy("guess"):
            pass


def test_config_field_validated():
    LocateConfig(subject_not_found="last").validate()
    assert LocateConfig().subject_not_found == "skip"
    with pytest.raises(ValueError, match="subject_not_found"):
        LocateConfig(subject_not_found="maybe").validate()


def test_requests_without_subject_checks_every_prefix(tiny_model):
    fmt = PromptFormatter(tiny_model.tokenizer)
    ok = EditRequest(case_id="c1", prompt="Wo wurde Kolumbus geboren?", target_new="Genua", subject="Kolumbus", lang="de")
    bad = EditRequest(case_id="c1", prompt="Wo wurde Kolumbus geboren?", target_new="Genua", subject="Columbus", lang="de")
    assert requests_without_subject(fmt, [ok, bad, ok], {"default": [""]}) == [1]
    # the subject appearing only in a context prefix does not count: the prompt itself is checked per prefix
    assert requests_without_subject(fmt, [ok], {"default": ["", "Columbus. "]}) == []


def _world_cases(world, n):
    out = []
    for line in open(world / "cases.jsonl", encoding="utf-8"):
        d = json.loads(line)
        out.append(EditCase(d["case_id"], {k: LangView(**v) for k, v in d["views"].items()}))
        if len(out) == n:
            return out


def _rome_spec(world, out, data, **ov):
    return EvalSpec.from_dict(dict(model="world:" + str(world), out=str(out), method="rome", bench="jsonl", data=data,
                                   edit_lang="en", test_langs=["en"], device="cpu", max_new_tokens=2,
                                   method_overrides=dict(layers=[0], v_steps=3, progress=False, mom2_n_samples=200,
                                                         **ov)))


def test_eval_skips_and_counts_cases_without_subject(world, tmp_path):
    import xke

    lm = xke.load("world:" + str(world), device="cpu")
    cases = _world_cases(world, 2)
    en = cases[1].views["en"]
    cases[1].views["en"] = LangView(**{**en.__dict__, "subject": en.subject + "ovia"})  # not in the prompt
    data = str(write_jsonl(tmp_path / "cases.jsonl", cases))
    with pytest.warns(UserWarning, match="1 of 2 cases skipped"):
        m = run_eval(_rome_spec(world, tmp_path / "skip", data), loaded=lm, progress=False)
    assert m["skipped"] == {"subject_not_found": 1, "policy": "skip", "case_ids": [cases[1].case_id]}
    assert m["n_cases"] == 1
    with pytest.raises(DataError, match=f"case '{cases[1].case_id}'.*does not occur"):
        run_eval(_rome_spec(world, tmp_path / "fail", data, subject_not_found="fail"), loaded=lm, progress=False)
    # every case without its subject: a clear error before any edit
    only_bad = str(write_jsonl(tmp_path / "bad.jsonl", cases[1:]))
    with pytest.raises(DataError, match="every one of the 1 cases"):
        run_eval(_rome_spec(world, tmp_path / "all", only_bad), loaded=lm, progress=False)
