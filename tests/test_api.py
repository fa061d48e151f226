"""The public API (``xke.load/edit/EditStore/evaluate``): the README's Python examples run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_python_blocks(section: str = "Using xke from Python") -> list[str]:
    """The fenced ``python`` blocks of one ``##`` section of the README."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start:end if end >= 0 else None]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_readme_section_has_examples():
    blocks = readme_python_blocks()
    assert len(blocks) >= 2 and all("xke." in b for b in blocks)


@pytest.mark.parametrize("i", [0, 1])
def test_readme_python_examples_run(i, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_python_blocks()[i], f"README.md python block {i}", "exec"), {"__name__": "__readme__"})


def test_edit_changes_the_weights_and_restore_undoes_it():
    import torch
    import xke

    lm = xke.load("tiny-llama", device="cpu")
    w = dict(lm.model.named_parameters())["model.layers.0.mlp.down_proj.weight"]
    before = w.detach().clone()
    req = {"case_id": "c", "lang": "en", "subject": "France", "prompt": "What is the capital of France?",
           "target_new": "Lyon"}
    h = xke.edit(lm.model, lm.tokenizer, [req], method="rome", layers=[0], v_steps=3, mom2_adjustment=False)
    assert not torch.equal(w, before)
    h.restore()
    assert torch.equal(w, before)


def test_edit_bad_request_names_it():
    import xke
    from xke.errors import DataError

    lm = xke.load("tiny-llama", device="cpu")
    with pytest.raises(DataError, match=r"edit request 0 \('c'\).*colour"):
        xke.edit(lm.model, lm.tokenizer, [{"case_id": "c", "colour": "red"}], method="rome")


def test_import_is_cheap():
    code = "import sys, xke; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root, env=env)
    assert out.stdout.strip() == "[]"
