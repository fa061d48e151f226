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


def _readme_table(mx) -> dict[tuple[str, str], dict[str, str]]:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    head = "| family | dtype | " + " | ".join(mx.PATHS) + " |"
    i = lines.index(head)
    table = {}
    for line in lines[i + 2:]:
        if not line.startswith("| "):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        table[(cells[0], cells[1])] = dict(zip(mx.PATHS, cells[2:]))
    return table


def _status(cell: str) -> str:
    return cell.split()[0].rstrip(":")


def test_readme_table_covers_every_cell(matrix_module):
    mx = matrix_module
    table = _readme_table(mx)
    assert list(table) == [(f, d) for f in mx.FAMILY_ORDER for d in mx.DTYPES]
    assert {_status(c) for row in table.values() for c in row.values()} <= {"ok", "refused"}


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").environ.get("XKE_FULL_MATRIX"),
                    reason="set XKE_FULL_MATRIX=1 to rerun the whole README matrix (~5 CPU-minutes)")
def test_full_matrix_matches_readme(matrix_module, tmp_path):
    mx = matrix_module
    got = mx.build_matrix(work=tmp_path)
    want = _readme_table(mx)
    assert {k: {p: _status(c) for p, c in row.items()} for k, row in got.items()} == \
        {k: {p: _status(c) for p, c in row.items()} for k, row in want.items()}
