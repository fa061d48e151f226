"""``xke demo`` and its shipped artifacts (xke/artifacts/demo): checksums, bit-identical rebuilds, the story."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xke.artifacts import DETERMINISTIC, SHIPPED, check_files, demo_artifacts, load_manifest
from xke.errors import XkeError
from xke.fsutil import hash_path


def test_shipped_artifacts_match_their_manifest_and_fit_the_package_limits():
    m = load_manifest()
    assert check_files(SHIPPED, m["files"]) == []
    sizes = {rel: (SHIPPED / rel).stat().st_size for rel in m["files"]}
    assert sum(sizes.values()) < 64 * 2**20 and max(sizes.values()) < 20 * 2**20
    assert m["seed"] == 0 and m["preset"] == "tiny" and "--preset toy" in m["commands"]["xkde"]
    assert set(DETERMINISTIC) <= set(m["files"])
    cfg = json.loads((SHIPPED / "xkde" / "config.json").read_text())
    assert cfg["xke_world"] and "xke_world_dir" not in cfg        # no path of the build machine
    card = (SHIPPED / "xkde" / "README.md").read_text()
    assert "world:W" in card and "`/" not in card and "world:/" not in card      # no path of the build machine
    assert not list(SHIPPED.rglob("*.bin")) and not list(SHIPPED.rglob("*.pt"))   # safetensors only


@pytest.mark.slow
def test_shipped_world_is_the_tiny_preset_rebuilt_bit_for_bit(built_world):
    """``built_world``: the tiny world this checkout builds (from scratch in CI, whose cache starts empty)."""
    world = built_world
    m = load_manifest()
    assert json.loads((Path(world) / "build.json").read_text())["key"] == m["world_key"], \
        "the tiny preset or the builder changed: refresh the shipped artifacts (python -m xke.artifacts pack)"
    for rel in ("world.json", "cases.jsonl", "corpus.txt", "model/model.safetensors", "model/tokenizer.json"):
        assert hash_path(Path(world) / rel) == m["files"][f"world/{rel}"], f"{rel} differs from the shipped file"


@pytest.mark.slow
def test_shipped_retriever_is_rebuilt_bit_for_bit(built_world, tmp_path):
    world = built_world
    from xke.world.retriever import train_world_retriever

    out = train_world_retriever(world, tmp_path / "retriever")
    assert hash_path(out / "model.safetensors") == load_manifest()["files"]["world/retriever/model.safetensors"]


def test_pack_writes_a_verifiable_manifest_and_a_portable_model_card(tmp_path):
    from xke.artifacts import pack
    world, xkde = demo_artifacts(cache=tmp_path / "c")
    card = xkde / "README.md"
    card.write_text(card.read_text().replace("- base model:", "- trained from: `world:/home/someone/w`\n"
                                                               "- from: `/home/someone/w/model`\n- base model:"))
    m = pack(world, xkde, tmp_path / "dest")
    assert check_files(tmp_path / "dest", m["files"]) == [] and m["world_key"] == load_manifest()["world_key"]
    text = (tmp_path / "dest" / "xkde" / "README.md").read_text()
    assert "trained from: `world:W`" in text and "from: `W/model`" in text and "/home/someone" not in text
    assert "xke_world_dir" not in json.loads((tmp_path / "dest" / "xkde" / "config.json").read_text())


def test_demo_artifacts_are_checked_and_copied_out_of_the_package(tmp_path):
    src = tmp_path / "src"
    import shutil
    shutil.copytree(SHIPPED, src)
    world, xkde = demo_artifacts(src, cache=tmp_path / "c")
    assert (world / "model" / "model.safetensors").exists() and (xkde / "model.safetensors").exists()
    assert world.parent == tmp_path / "c"
    assert json.loads((xkde / "config.json").read_text())["xke_world_dir"] == str(world)   # finds its retriever
    assert demo_artifacts(src, cache=tmp_path / "c") == (world, xkde)                      # the copy is reused
    # a corrupted cached copy is replaced; a corrupted source is refused with the file named
    (world / "cases.jsonl").write_text("{}\n")
    world, _ = demo_artifacts(src, cache=tmp_path / "c")
    assert hash_path(world / "cases.jsonl") == load_manifest()["files"]["world/cases.jsonl"]
    (src / "xkde" / "model.safetensors").write_bytes(b"oops")
    with pytest.raises(XkeError, match=r"xkde/model\.safetensors.*xke demo --rebuild"):
        demo_artifacts(src, cache=tmp_path / "c2")
    (src / "manifest.json").unlink()
    with pytest.raises(XkeError, match="no demo artifacts"):
        demo_artifacts(src, cache=tmp_path / "c3")


@pytest.mark.slow
def test_demo_story_xkde_beats_every_weight_editor_across_languages(tmp_path, capsys):
    """The demo's code path (shipped tiny world and X-KDE model; fewer weight editors and a 100-edit memory
    to stay fast): X-KDE's cross-lingual reliability beats the best weight-editing row's."""
    from xke.demo import run_demo

    md = run_demo(out=tmp_path / "d", methods=["none", "rome", "memit", "xkde"], memory=100, progress=False)
    rows = {r["key"]: r for r in json.loads((tmp_path / "d" / "demo.json").read_text())["rows"]}
    assert set(rows) == {"none", "rome", "memit", "xkde", "xkde-memory"}

    def cross(r):
        return (r["reliability"]["en->zh"] + r["reliability"]["zh->en"]) / 2

    best_weight = max(cross(r) for r in rows.values() if r["kind"] == "weight")
    assert cross(rows["xkde"]) > best_weight + 30
    for k in ("rome", "memit"):   # an English edit reaches English, not Chinese
        assert rows[k]["reliability"]["en->en"] > rows[k]["reliability"]["en->zh"] + 30
    assert rows["xkde-memory"]["locality"] > rows["xkde"]["locality"] + 30   # retrieval keeps locality
    assert "| xkde (gold) | X-KDE-trained |" in md and "100 edits in its memory" in md
    assert (tmp_path / "d" / "heatmap.png").stat().st_size > 1000
    assert md in capsys.readouterr().out


@pytest.mark.parametrize("args, field", [(["--memory", "-1"], "--memory"), (["--n", "0"], "--n")])
def test_demo_refuses_bad_numbers_before_any_work(tmp_path, capsys, args, field):
    from xke.cli import main

    assert main(["demo", *args, "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0]
    assert not (tmp_path / "d").exists()
