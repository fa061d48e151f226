"""`xke report --layout`: the X-KDE paper's Tables 2, 4, 5, 6 and CLM-Bench's Tables 1-2."""

from __future__ import annotations

import json
import re

import pytest

from xke.cli import main
from xke.errors import XkeError
from xke.eval.report import render_layout


def run(method, edit, blocks, **kw):
    return {"method": method, "edit_lang": edit, "model": "m", "bench": "b", "test_langs": list(blocks),
            "by_test_lang": blocks, "n_cases": 1, "protocol": "single", "batch_size": 1, **kw}


def _cells(md: str, first: str) -> list[str]:
    line = next(l for l in md.splitlines() if l.startswith(f"| {first} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_clm_table1_reproduces_the_papers_row():
    """CLM-Bench Table 1, Llama3-8B MEMIT, Chinese editing: zh 63.21/56.74/65.17, en 19.55/18.69/92.09 ->
    zh score 61.71, en score 43.44, trans 19.55/63.21 = 30.93%."""
    m = run("memit", "zh", {"zh": {"reliability": {"tf_acc": 63.21}, "generality": {"tf_acc": 56.74},
                                   "locality": {"loc_acc": 65.17}},
                            "en": {"reliability": {"tf_acc": 19.55}, "generality": {"tf_acc": 18.69},
                                   "locality": {"loc_acc": 92.09}}}, batch_size=1000)
    md = render_layout([m], "clm1")
    assert _cells(md, "m")[1:] == ["memit", "Chinese", "61.71", "43.44", "63.21", "56.74", "65.17", "19.55",
                                   "18.69", "92.09", "30.93"]
    assert _cells(render_layout([m], "clm2"), "m")[1] == "1000"


def test_table4_5_6_ablation_layouts():
    blocks = lambda r, l: {"en": {"reliability": {"tf_acc": r}, "generality": {"tf_acc": r - 10},  # noqa: E731
                                  "locality": {"tf_acc": l}, "portability": {"tf_acc": 40.0}},
                           "zh": {"reliability": {"tf_acc": r / 2}, "generality": {"tf_acc": 30.0},
                                  "locality": {"tf_acc": l}, "portability": {"tf_acc": 20.0}}}
    runs = [run("xkde", "en", blocks(90.0, 80.0)), run("xkde", "zh", blocks(70.0, 60.0)),
            run("xkde", "en", blocks(50.0, 100.0))]
    labels = ["X-KDE", "X-KDE", "-w/o stage 2"]
    t4 = render_layout(runs, "table4", labels=labels)
    # X-KDE en-avg: mean of its eight en-edit figures (90, 80, 80, 40, 45, 30, 80, 20) = 465 / 8
    assert _cells(t4, "X-KDE") == ["X-KDE", f"{round(465 / 8, 2):.2f}", f"{round((70 + 60 + 60 + 40 + 35 + 30 + 60 + 20) / 8, 2):.2f}"]
    assert _cells(t4, "-w/o stage 2")[2] == "–"
    t5 = render_layout(runs, "table5", labels=labels)
    assert "| Methods | en-en R. | en-en G. | en-en L. | en-en P. | en-zh R. |" in t5
    assert _cells(t5, "-w/o stage 2")[1:5] == ["50.00", "40.00", "100.00", "40.00"]
    t6 = render_layout(runs[:1], "table6", labels=["+ORPO"])
    assert "en-en Eff. | en-en Gen. | en-en Loc. | en-en Por." in t6
    assert _cells(t6, "+ORPO")[-1] == f"{round((90 + 80 + 80 + 40 + 45 + 30 + 80 + 20) / 8, 2):.2f}"
    with pytest.raises(XkeError, match="3 runs"):
        render_layout(runs, "table4", labels=["a"])


def test_table2_from_twelve_per_language_runs(tmp_path, shared_data, tiny_model):
    """X-KDE Table 2 rebuilt by `xke report --layout table2` from 12 runs (edit en, one test language each):
    one block per metric, en-xx columns in MzsRE order, en-avg = mean of the 12 figures of that metric."""
    from xke.data.languages import MZSRE_LANGUAGES
    from xke.eval.runner import EvalSpec, run_eval

    dirs = []
    for lang in reversed(MZSRE_LANGUAGES):  # any order: the layout puts columns in MzsRE order
        out = tmp_path / f"none-en-{lang}"
        run_eval(EvalSpec(model="tiny-llama", out=str(out), bench="mzsre", data=str(shared_data / "mzsre" / "test"),
                          edit_lang="en", test_langs=[lang], limit=2, max_new_tokens=1, profile="easyedit"),
                 loaded=tiny_model, progress=False)
        dirs.append(str(out))
    assert main(["report", *dirs, "--layout", "table2", "--out", str(tmp_path / "t2")]) == 0
    md = (tmp_path / "t2" / "report.md").read_text(encoding="utf-8")
    header = next(l for l in md.splitlines() if l.startswith("| Metrics |"))
    assert header == "| Metrics | Methods | " + " | ".join(f"en-{t}" for t in MZSRE_LANGUAGES) + " | en-avg |"
    blocks = [l.split("|")[1].strip() for l in md.splitlines() if l.startswith("| ") and l.split("|")[1].strip()
              and l.split("|")[1].strip() not in ("Metrics",)]
    assert blocks == ["Reliability", "Generality", "Locality", "Portability"]
    for kind, title in (("reliability", "Reliability"), ("locality", "Locality")):
        key = "tf_acc" if kind != "locality" else "loc_acc"
        vals = [json.loads((tmp_path / f"none-en-{t}" / "metrics.json").read_text())["by_test_lang"][t][kind][key]
                for t in MZSRE_LANGUAGES]
        row = _cells(md, title)
        assert row[2:14] == [f"{v:.2f}" for v in vals]
        assert row[14] == f"{round(sum(vals) / 12, 2):.2f}"
    assert re.search(r"\| Locality \| none \| (100\.00 \| ){12}100\.00 \|", md)  # unedited: agrees with itself
