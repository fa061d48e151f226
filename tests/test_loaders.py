"""Loaders on the real benchmark files and on broken copies; ``xke data check``."""

from __future__ import annotations

import json
import shutil

import pytest

from xke.cli import main
from xke.data.loaders import (case_from_dict, check_bench, load_bench, load_bizsre, load_clm, load_mzsre,
                              load_mzsre_train, read_jsonl, strip_nq_prefix, write_jsonl)
from xke.data.schema import EditCase, LangView
from xke.errors import DataError, XkeError

ZW = ("\u200b", "\ufeff")


def _walk_strings(x):
    if isinstance(x, str):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _walk_strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from _walk_strings(v)


# ------------------------------------------------------------------ real files
def test_bizsre_counts_ids_provenance(shared_data):
    path = shared_data / "bizsre" / "test.json"
    cases = load_bench("bizsre", path)
    assert len(cases) == 1037
    assert cases.summary()["languages"] == {"en": 1037, "zh": 1037}
    assert cases[0].case_id == "bizsre-0" and cases[-1].case_id == "bizsre-1036"
    assert all(c.provenance.file == str(path) and c.provenance.row == i for i, c in enumerate(cases))
    raw = json.loads(path.read_text(encoding="utf-8"))
    en, zh = cases[0].view("en"), cases[0].view("zh")
    assert en.prompt == raw[0]["en"]["src"] and en.target_new == raw[0]["en"]["alt"]
    assert en.paraphrases == [raw[0]["en"]["rephrase"]]
    assert en.portability_prompt == raw[0]["en"]["portability"]["New Question"]
    assert en.portability_answer == raw[0]["en"]["portability"]["New Answer"]
    assert en.locality_answer == raw[0]["en"]["loc_ans"] and en.style == "question"
    assert zh.locality_prompt == raw[0]["zh"]["loc"]
    # the loader keeps only the views asked for
    only_zh = load_bizsre(path, langs="zh", limit=3)
    assert len(only_zh) == 3 and only_zh[0].languages == ["zh"]


def test_nq_prefix_stripped_only_as_prefix(shared_data):
    path = shared_data / "bizsre" / "test.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    cases = load_bizsre(path)
    n_q_or_n = 0
    for rec, case in zip(raw, cases):
        loc = rec["en"]["loc"]
        assert loc.startswith("nq question: ")
        assert case.view("en").locality_prompt == loc[len("nq question: "):]
        if loc[len("nq question: "):][:1] in ("q", "n", "u", "e", "s", "t", "i", "o"):
            n_q_or_n += 1  # lstrip("nq question: ") would have eaten these first letters
    assert n_q_or_n > 0
    # a question that itself starts with q / n keeps its letters
    assert strip_nq_prefix("nq question: question of the day") == "question of the day"
    assert strip_nq_prefix("nq question: name the river") == "name the river"
    assert strip_nq_prefix("no prefix here") == "no prefix here"
    assert strip_nq_prefix("what is nq question: x") == "what is nq question: x"


def test_zero_width_characters_kept(shared_data):
    for bench, path in (("bizsre", shared_data / "bizsre" / "test.json"),
                        ("mzsre", shared_data / "mzsre" / "test" / "en.json")):
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw_zw = sorted(s for s in _walk_strings(raw) if any(z in s for z in ZW))
        assert raw_zw, f"expected zero-width characters in {path}"
        got = set()
        for c in load_bench(bench, path):
            got |= {s for s in _walk_strings(c.to_dict()) if any(z in s for z in ZW)}
        for s in raw_zw:
            assert strip_nq_prefix(s) in got


def test_mzsre_12_by_743_aliases_and_single_file(shared_data):
    folder = shared_data / "mzsre" / "test"
    cases = load_bench("mzsre", folder)
    s = cases.summary()
    assert s["cases"] == 743 and len(s["languages"]) == 12 and set(s["languages"].values()) == {743}
    assert set(s["languages"]) == {"en", "cz", "de", "du", "es", "fr", "pt", "ru", "th", "tr", "vi", "zh"}
    assert cases[5].case_id == "mzsre-5" and cases[5].provenance.row == 5
    # row-aligned: row i of every file is the same case
    raw_de = json.loads((folder / "de.json").read_text(encoding="utf-8"))
    assert cases[100].view("de").prompt == raw_de[100]["src"]
    sub = load_mzsre(folder, langs="cs,nl,en")
    assert sub[0].languages == ["cz", "du", "en"] and len(sub) == 743
    one = load_mzsre(folder / "th.json")
    assert len(one) == 743 and one[0].languages == ["th"]
    assert one[0].provenance.file == str(folder / "th.json")
    with pytest.raises(DataError, match="no file for language"):
        load_mzsre(folder, langs="ja")
    with pytest.raises(XkeError, match="unknown language"):
        load_mzsre(folder, langs="xx")


def test_mzsre_train_broken_lines(shared_data):
    folder = shared_data / "mzsre" / "train"
    with pytest.warns(UserWarning, match="35 broken line"):
        tp = load_mzsre_train(folder)
    assert tp.skipped == 35 and len(tp.skipped_lines) == 35
    assert len(tp) == 10000 - 35 and len(tp.languages) == 12
    # the broken line numbers are the same in every language
    assert all(b == tp.skipped_lines for b in tp.broken.values())
    assert tp.skipped_lines[:3] == [40, 233, 374]
    for lang in ("en", "de", "th"):
        with pytest.warns(UserWarning):
            single = load_mzsre_train(folder / f"{lang}.tsv")
        assert single.skipped_lines == tp.skipped_lines
    # nothing misparsed: no answer equals its question, none empty, no trailing space on questions
    for lang, pairs in tp.pairs.items():
        assert len(pairs) == 9965
        assert all(a and a != q and not q.endswith(" ") for q, a in pairs), lang
    # line-aligned: pair k is line tp.lines[k] in every file
    k = 123
    de_line = (folder / "de.tsv").read_text(encoding="utf-8").split("\n")[tp.lines[k] - 1]
    assert tp.pairs["de"][k] == (de_line.split("\t")[0].rstrip(" "), de_line.split("\t")[1].strip())
    s = check_bench("mzsre-train", folder, langs="en,zh")
    assert s["skipped"] == 35 and s["languages"] == {"en": 9965, "zh": 9965}
    assert "40, 233" in s["warnings"][0]


def test_clm_pairs_by_position(shared_data):
    d = shared_data / "clm_bench"
    zh_f = d / "chinese_fields_with_loc.sample.json"
    en_f = d / "english_fields_with_loc.sample.json"
    merged_f = d / "merged_alternate_fields_no_english.sample.json"
    both = load_bench("clm", d)
    assert len(both) == 40 and both.summary()["languages"] == {"zh": 40, "en": 40}
    assert any("ignored merged" in w for w in both.warnings)
    raw_zh = json.loads(zh_f.read_text(encoding="utf-8"))
    raw_en = json.loads(en_f.read_text(encoding="utf-8"))
    c = both[0]
    assert c.case_id == "clm-0"
    zh, en = c.view("zh"), c.view("en")
    assert zh.style == en.style == "cloze"
    assert (zh.prompt, zh.target_new, zh.target_old) == (raw_zh[0]["prompt"], raw_zh[0]["target_new"],
                                                         raw_zh[0]["ground_truth"])
    assert zh.paraphrases == [raw_zh[0]["rephrase_prompt"]]
    assert en.prompt == raw_en[0]["english_prompt"] and en.target_old == raw_en[0]["english_ground_truth"]
    assert en.locality_prompt == raw_en[0]["loc"].removeprefix("nq question: ")
    assert not en.locality_prompt.startswith("nq question")
    assert [x.case_id for x in both] == [f"clm-{i}" for i in range(40)]
    # either file alone
    zh_only = load_clm(zh_f)
    assert len(zh_only) == 40 and zh_only[0].languages == ["zh"]
    en_only = load_clm(en_f)
    assert len(en_only) == 40 and en_only[0].languages == ["en"]
    assert en_only[7].view("en").prompt == raw_en[7]["english_prompt"]
    # merged alternating file: rows 2i, 2i+1 -> zh, en
    merged = load_clm(merged_f)
    raw_m = json.loads(merged_f.read_text(encoding="utf-8"))
    assert len(merged) == 40 and merged.summary()["languages"] == {"zh": 40, "en": 40}
    for i in (0, 17, 39):
        assert merged[i].view("zh").prompt == raw_m[2 * i]["prompt"]
        assert merged[i].view("en").prompt == raw_m[2 * i + 1]["prompt"]
        assert merged[i].view("en").prompt == both[i].view("en").prompt
        assert merged[i].provenance.row == 2 * i


def test_clm_pairs_by_position_not_case_id(tmp_path, shared_data):
    """case_id repeats in the full files: pairing must follow row position."""
    d = shared_data / "clm_bench"
    zh = json.loads((d / "chinese_fields_with_loc.sample.json").read_text(encoding="utf-8"))
    en = json.loads((d / "english_fields_with_loc.sample.json").read_text(encoding="utf-8"))
    for recs in (zh, en):
        for r in recs:
            r["case_id"] = 1  # every id the same
    (tmp_path / "chinese_fields_with_loc.json").write_text(json.dumps(zh, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "english_fields_with_loc.json").write_text(json.dumps(en, ensure_ascii=False), encoding="utf-8")
    cases = load_clm(tmp_path)
    assert len(cases) == 40
    assert cases[3].view("zh").prompt == zh[3]["prompt"] and cases[3].view("en").prompt == en[3]["english_prompt"]
    assert len({c.case_id for c in cases}) == 40


def test_jsonl_roundtrip(tmp_path, shared_data):
    cases = load_bizsre(shared_data / "bizsre" / "test.json", limit=5)
    p = write_jsonl(tmp_path / "edits.jsonl", cases)
    back = read_jsonl(p)
    assert [c.to_dict() for c in back] == [c.to_dict() for c in cases]
    assert back[2].provenance.row == 3  # 1-based line
    assert load_bench("jsonl", p, langs="cs,zh")[0].languages == ["zh"]
    own = EditCase("my-1", {"cs": LangView(subject="Praha", prompt="Hlavní město?", target_new="Praha",
                                           style="cloze")})
    assert case_from_dict(json.loads(own.to_json())).views["cz"].style == "cloze"


# ------------------------------------------------------------------ broken copies
def _bizsre_copy(tmp_path, shared_data, mutate):
    raw = json.loads((shared_data / "bizsre" / "test.json").read_text(encoding="utf-8"))[:10]
    mutate(raw)
    p = tmp_path / "test.json"
    p.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    return p


@pytest.mark.parametrize("mutate, row, field, what", [
    (lambda r: r[3]["en"].pop("src"), 3, "en.src", "missing field"),
    (lambda r: r[4]["zh"].__setitem__("alt", 2006), 4, "zh.alt", "expected a string"),
    (lambda r: r[5]["en"].__setitem__("alt", "  "), 5, "en.alt", "empty"),
    (lambda r: r[6]["zh"].__setitem__("portability", ["x"]), 6, "zh.portability", "expected an object"),
    (lambda r: r[7]["en"]["portability"].pop("New Answer"), 7, "en.portability.New Answer", "missing"),
    (lambda r: r[8].__setitem__("xx", r[8]["en"]), 8, "xx", "unknown language"),
])
def test_bizsre_broken_copies(tmp_path, shared_data, capsys, mutate, row, field, what):
    p = _bizsre_copy(tmp_path, shared_data, mutate)
    with pytest.raises(DataError) as ei:
        load_bench("bizsre", p)
    msg = str(ei.value)
    assert str(p) in msg and f"record {row}" in msg and f"field '{field}'" in msg and what in msg
    assert (ei.value.row, ei.value.field) == (row, field)
    assert main(["data", "check", "bizsre", str(p)]) == 2
    err = capsys.readouterr().err
    assert str(p) in err and f"record {row}" in err and f"field '{field}'" in err


def test_invalid_json_files(tmp_path, capsys, shared_data):
    p = tmp_path / "test.json"
    p.write_text('[{"en": {"src": "a"}},\n {"en": ]', encoding="utf-8")
    with pytest.raises(DataError, match=r"test.json: invalid JSON: .* \(line 2, column"):
        load_bizsre(p)
    assert main(["data", "check", "bizsre", str(p), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "invalid JSON" in captured.err and str(p) in captured.err
    # mzsre folder with one broken language file
    d = tmp_path / "mz"
    d.mkdir()
    for lang in ("en", "de"):
        shutil.copy(shared_data / "mzsre" / "test" / f"{lang}.json", d / f"{lang}.json")
    raw = json.loads((d / "de.json").read_text(encoding="utf-8"))
    raw[42]["alt"] = ""
    (d / "de.json").write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataError, match=r"de.json, record 42, field 'alt': empty"):
        load_mzsre(d)
    raw.pop()
    (d / "de.json").write_text(json.dumps(raw[:-1], ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataError, match="not row-aligned"):
        load_mzsre(d)
    # clm: wrong type
    zh = json.loads((shared_data / "clm_bench" / "chinese_fields_with_loc.sample.json").read_text(encoding="utf-8"))
    zh[9]["target_new"] = ["法国"]
    q = tmp_path / "chinese_fields_with_loc.json"
    q.write_text(json.dumps(zh, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataError, match=r"record 9, field 'target_new': expected a string"):
        load_clm(q)


def _jsonl(tmp_path, lines):
    p = tmp_path / "edits.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


GOOD = {"case_id": "a", "views": {"en": {"subject": "Paris", "prompt": "Capital of France?", "target_new": "Lyon"}}}


@pytest.mark.parametrize("bad, line, field, what", [
    ('{"case_id": "b", "views": {"xx": {"subject": "s", "prompt": "p", "target_new": "t"}}}', 2, "views.xx",
     "unknown language"),
    ('{"case_id": "b", "views": {"en": {"subject": "s", "prompt": "p"}}}', 2, "views.en.target_new", "missing field"),
    ('{"case_id": "b", "views": {"zh": {"subject": "s", "prompt": "p", "target_new": ""}}}', 2,
     "views.zh.target_new", "empty"),
    ('{"case_id": "b", "views": {"en": {"subject": "s", "prompt": "p", "target_new": "t", "paraphrases": "q"}}}',
     2, "views.en.paraphrases", "expected a list"),
    ('{"case_id": 1.5, "views": {}}', 2, "case_id", "expected a non-empty string"),
    ('{"case_id": "a", "views": {"en": {"subject": "s", "prompt": "p", "target_new": "t"}}}', 2, "case_id",
     "duplicate"),
    ('{"views": {"en": {"subject": "s", "prompt": "p", "target_new": "t"}}}', 2, "case_id", "missing field"),
])
def test_jsonl_broken(tmp_path, capsys, bad, line, field, what):
    p = _jsonl(tmp_path, [json.dumps(GOOD), bad])
    with pytest.raises(DataError) as ei:
        read_jsonl(p)
    msg = str(ei.value)
    assert str(p) in msg and f"record {line}" in msg and f"field '{field}'" in msg and what in msg
    assert main(["data", "check", "jsonl", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xke: error:") and f"field '{field}'" in err and f"record {line}" in err


def test_jsonl_invalid_json_line(tmp_path, capsys):
    p = _jsonl(tmp_path, [json.dumps(GOOD), "", '{"case_id": "b", "views": '])
    with pytest.raises(DataError, match=r"edits.jsonl, record 3: invalid JSON on line 3"):
        read_jsonl(p)
    assert main(["data", "check", "jsonl", str(p)]) == 2
    assert "invalid JSON on line 3" in capsys.readouterr().err


# ------------------------------------------------------------------ CLI
def test_cli_data_check_json(shared_data, capsys):
    assert main(["data", "check", "bizsre", str(shared_data / "bizsre" / "test.json"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"bench": "bizsre", "path": str(shared_data / "bizsre" / "test.json"), "cases": 1037,
                   "languages": {"en": 1037, "zh": 1037}, "skipped": 0, "warnings": []}
    assert main(["data", "check", "mzsre", str(shared_data / "mzsre" / "test"), "--json", "--langs", "cs,nl"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cases"] == 743 and out["languages"] == {"cz": 743, "du": 743}
    assert main(["data", "check", "clm", str(shared_data / "clm_bench")]) == 0
    text = capsys.readouterr().out
    assert "40 cases" in text and "zh 40" in text and "en 40" in text
    assert main(["data", "check", "mzsre-train", str(shared_data / "mzsre" / "train"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bench"] == "mzsre-train" and out["skipped"] == 35 and out["cases"] == 9965


def test_cli_data_check_errors(tmp_path, capsys):
    assert main(["data", "check", "nope", str(tmp_path)]) == 2
    assert "unknown benchmark" in capsys.readouterr().err
    assert main(["data", "check", "bizsre", str(tmp_path / "missing.json")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_documented_example_loads(tmp_path):
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "edit-format.md").read_text(encoding="utf-8")
    block = doc.split("As the file holds them:\n\n```\n")[1].split("```")[0]
    p = tmp_path / "edits.jsonl"
    p.write_text(block, encoding="utf-8")
    cases = read_jsonl(p)
    assert [c.case_id for c in cases] == ["capital-fr", "ir-origin"] and not cases.warnings
    assert cases.summary()["languages"] == {"en": 1, "zh": 2}
    assert cases[1].view("zh").style == "cloze" and cases[0].meta == {"source": "my notes"}
    kinds = [q.kind for q in cases[0].queries("en")]
    assert kinds == ["reliability", "generality", "locality", "portability"]
