"""Metrics aggregation, report tables, heatmaps and merging runs."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from xke.cli import main
from xke.eval.report import aggregate, load_run, merge_runs, render_tables

SPEC = SimpleNamespace(method="m", model="tiny", bench="jsonl", edit_lang="zh", test_langs=["zh", "en"],
                       protocol="single", batch_size=1)


def q(lang, kind, tf, f1, em=0.0, index=0):
    return {"lang": lang, "kind": kind, "index": index, "tf_acc": tf, "f1": f1, "em": em, "pred": ""}


def test_aggregate_hand_computed():
    recs = [
        {"case_id": "a", "queries": [q("zh", "reliability", 1.0, 1.0, 1.0), q("zh", "generality", 0.5, 0.5),
                                     q("zh", "generality", 0.0, 0.0, index=1), q("zh", "locality", 1.0, 1.0, 1.0),
                                     q("en", "reliability", 0.25, 0.5), q("en", "locality", 0.5, 1.0)]},
        {"case_id": "b", "queries": [q("zh", "reliability", 0.5, 0.0), q("zh", "generality", 1.0, 1.0),
                                     q("zh", "locality", None, 1.0, 1.0),
                                     q("en", "reliability", 0.75, 1.0, 1.0), q("en", "locality", 1.0, 1.0)]},
    ]
    m = aggregate(recs, SPEC)
    zh, en = m["by_test_lang"]["zh"], m["by_test_lang"]["en"]
    assert zh["reliability"] == {"tf_acc": 75.0, "f1": 50.0, "em": 50.0}
    # case a: mean of its two paraphrases (0.25), case b: 1.0 -> 62.5
    assert zh["generality"]["tf_acc"] == 62.5
    assert zh["locality"]["tf_acc"] == 100.0  # None ignored
    assert en["reliability"] == {"tf_acc": 50.0, "f1": 75.0, "em": 50.0}
    assert "portability" not in zh and "generality" not in en
    assert m["avg"] == round((75 + 62.5 + 100 + 50 + 75) / 5, 2)
    assert m["n_cases"] == 2
    # CLM: zh editing, trans = en rel / zh rel
    assert m["clm"]["trans"] == round(100 * 50 / 75, 2)
    assert m["clm"]["zh_score"] == round((75 + 62.5 + 100) / 3, 2)
    assert m["clm"]["en_score"] == round((50 + 75) / 2, 2)


def test_aggregate_clm_table1_arithmetic():
    spec = SimpleNamespace(**{**SPEC.__dict__, "edit_lang": "mix"})
    recs = [{"case_id": "a", "queries": [q("zh", "reliability", 0.6321, 0), q("en", "reliability", 0.7273, 0)]}]
    assert aggregate(recs, spec)["clm"]["trans"] == 86.91


def _run_dir(tmp_path, name, method, edit_lang, rel):
    d = tmp_path / name
    d.mkdir()
    bl = {lang: {"reliability": {"tf_acc": rel[lang], "f1": rel[lang] / 2, "em": 0.0},
                 "locality": {"tf_acc": 100.0, "f1": 90.0, "em": 80.0}} for lang in ("en", "zh")}
    m = {"method": method, "model": "tiny", "bench": "jsonl", "edit_lang": edit_lang, "test_langs": ["en", "zh"],
         "protocol": "single", "batch_size": 1, "n_cases": 3, "by_test_lang": bl,
         "avg": round((rel["en"] + rel["zh"] + 200) / 4, 2)}
    (d / "metrics.json").write_text(json.dumps(m))
    (d / "spec.json").write_text(json.dumps({"mode": "gold"}))
    return d


def test_render_tables_layout(tmp_path):
    run = load_run(_run_dir(tmp_path, "a", "ft-l", "en", {"en": 90.0, "zh": 10.0}))
    md = render_tables([run])
    assert "| Method | en Reliability | en Locality | zh Reliability | zh Locality | Avg. |" in md
    assert "**Edit in English**" in md
    assert "| ft-l | 90.00 | 100.00 | 10.00 | 100.00 | 75.00 |" in md
    assert "| ft-l | 45.00 | 90.00 | 5.00 | 90.00 | 57.50 |" in md  # F1 table, Avg = mean of the row


def test_merge_runs_and_cli(tmp_path, capsys):
    dirs = [_run_dir(tmp_path, "a", "ft-l", "en", {"en": 90.0, "zh": 10.0}),
            _run_dir(tmp_path, "b", "ft-l", "zh", {"en": 20.0, "zh": 95.0}),
            _run_dir(tmp_path, "c", "none", "en", {"en": 1.0, "zh": 2.0})]
    md, written = merge_runs(dirs, tmp_path / "merged")
    assert "**Edit in English**" in md and "**Edit in Chinese**" in md
    assert (tmp_path / "merged" / "heatmap.png").stat().st_size > 1000
    assert len(json.loads((tmp_path / "merged" / "runs.json").read_text())) == 3
    rc = main(["report", *map(str, dirs), "--out", str(tmp_path / "m2")])
    assert rc == 0 and "| none |" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nope")]) == 2
    with pytest.raises(Exception):
        load_run(tmp_path / "nope")
