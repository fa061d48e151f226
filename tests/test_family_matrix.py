"""The family x path x dtype matrix (benchmarks/family_matrix.py) on a few families: every path runs or is
refused by design."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def matrix_module():
    spec = importlib.util.spec_from_file_location("family_matrix", REPO / "benchmarks" / "family_matrix.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_matrix_subset(matrix_module, tmp_path):
    mx = matrix_module
    fams = ["gemma3_text", "mixtral"]
    table = mx.build_matrix(fams, mx.PATHS, ["float32"], tmp_path)
    md = mx.markdown(table, mx.PATHS)
    assert md.splitlines()[0] == "| family | dtype | none | rome | memit | ft-m | ike | xkde |"
    g = table[("gemma3_text", "float32")]
    assert all(g[p] == "ok" for p in ("none", "ike", "xkde")), g
    assert all(g[p].startswith("ok Δ=") and float(g[p].split("=")[1]) > 0 for p in mx.WEIGHT_PATHS), g
    m = table[("mixtral", "float32")]
    if m["none"].startswith("skip"):  # mistral-common (test extra) not installed
        pytest.skip(m["none"])
    assert [m[p] for p in mx.PATHS] == ["ok", "refused", "refused", "refused", "ok", "ok"]


def test_matrix_half_precision_and_missing_tokenizer(matrix_module, tmp_path, monkeypatch):
    mx = matrix_module
    monkeypatch.setenv("XKE_SHARED_TOKENIZERS", str(tmp_path / "none"))
    import xke.models.families as F

    monkeypatch.setattr(F, "shared_tokenizer_dir", lambda name="llama2": None)
    table = mx.build_matrix(["olmo2", "phi3"], ["none", "rome", "ft-m"], ["bfloat16", "float16"], tmp_path)
    for dt in ("bfloat16", "float16"):
        assert table[("olmo2", dt)]["none"] == "ok" and table[("olmo2", dt)]["rome"].startswith("ok Δ=")
        assert all(c.startswith("skip: the Llama 2 tokenizer") for c in table[("phi3", dt)].values())
