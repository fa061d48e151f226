"""Shared test fixtures.

- ``shared_data``: the real benchmark files in ``../shared/data`` (never copied into the project).
- ``shared_tokenizers``: the real tokenizers in ``../shared/tokenizers`` (Llama 2's SentencePiece model).
- ``tiny_model``: the built-in random ``tiny-llama`` (built from a config, loaded with from_pretrained).
- ``world``: one tiny toy world per test run (cached under $XKE_CACHE), the model every editing test uses.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("XKE_CACHE", str(REPO / ".xke-cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("XKE_TEST_THREADS", "1")))


def _find_shared_data() -> Path | None:
    for cand in (REPO.parent / "shared" / "data", REPO / "shared" / "data"):
        if (cand / "bizsre" / "test.json").exists():
            return cand
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    p = _find_shared_data()
    if p is None:
        pytest.skip("../shared/data not present (benchmark files are read from there, never copied)")
    return p


@pytest.fixture(scope="session")
def shared_tokenizers() -> Path:
    """``../shared/tokenizers`` (real tokenizer files, never copied into the project); skips when absent."""
    from xke.models.families import shared_tokenizer_dir

    d = shared_tokenizer_dir("llama2")
    if d is None:
        pytest.skip("../shared/tokenizers/llama2 not present (real tokenizers are read from there)")
    return d.parent


@pytest.fixture(scope="session")
def tiny_model():
    from xke.models.loading import load_model
    return load_model("tiny-llama", device="cpu")


@pytest.fixture(scope="session")
def world():
    """Directory of the tiny toy world (tiny preset, seed 0: world.json, cases.jsonl, model/, report.json,
    retriever/): the copy of the shipped one, so no test builds a world unless it tests building
    (``built_world``; ``test_demo`` checks that a build gives these files bit for bit)."""
    from xke.artifacts import demo_artifacts
    return demo_artifacts()[0]


@pytest.fixture(scope="session")
def built_world():
    """The tiny world (seed 0) built by this checkout (from scratch when the cache is empty, as in CI)."""
    from xke.world.build import build_world
    return build_world(preset="tiny", seed=0)


@pytest.fixture(scope="module")
def world_model(world):
    """The tiny world's model and tokenizer (one load per test module)."""
    import xke
    return xke.load(f"world:{world}", device="cpu")


@pytest.fixture(scope="module")
def cases(world):
    """The tiny world's edit cases (``cases.jsonl`` rows)."""
    from xke.data.loaders import read_jsonl
    return list(read_jsonl(Path(world) / "cases.jsonl"))
