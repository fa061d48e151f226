"""``xke data convert``: any loader's cases written as xke JSONL (the IKE pool format)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from xke.data.loaders import convert_bench, load_bench, read_jsonl
from xke.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def test_convert_bizsre_round_trips(shared_data, tmp_path):
    n, out = convert_bench("bizsre", shared_data / "bizsre" / "test.json", tmp_path / "pool.jsonl", limit=5)
    assert n == 5
    back = list(read_jsonl(out))
    src = list(load_bench("bizsre", shared_data / "bizsre" / "test.json", limit=5))
    assert [c.case_id for c in back] == [c.case_id for c in src]
    assert back[2].views["zh"] == src[2].views["zh"] and back[2].views["en"] == src[2].views["en"]


def test_convert_mzsre_train_pairs(shared_data, tmp_path):
    n, out = convert_bench("mzsre-train", shared_data / "mzsre" / "train", tmp_path / "p.jsonl", langs="en,zh",
                           limit=3)
    back = list(read_jsonl(out))
    assert n == 3 and [sorted(c.views) for c in back] == [["en", "zh"]] * 3
    en = back[0].views["en"]
    assert en.prompt == en.subject and en.target_new and "\t" not in en.prompt


def test_cli_convert_and_errors(shared_data, tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "xke.cli", "data", "convert", *a],  # noqa: E731
                                    capture_output=True, text=True, cwd=REPO)
    r = run("mzsre", str(shared_data / "mzsre" / "test"), "--langs", "en,de", "--limit", "4",
            "--out", str(tmp_path / "pool.jsonl"))
    assert r.returncode == 0, r.stderr
    assert "wrote 4 cases" in r.stdout
    assert [sorted(c.views) for c in read_jsonl(tmp_path / "pool.jsonl")] == [["de", "en"]] * 4
    r = run("bizsre", str(tmp_path / "missing.json"), "--out", str(tmp_path / "x.jsonl"))
    assert r.returncode == 2 and "no such file" in r.stderr
    with pytest.raises(DataError, match="no such file"):
        convert_bench("mzsre-train", tmp_path / "nope", tmp_path / "y.jsonl")
