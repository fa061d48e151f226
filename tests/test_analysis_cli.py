"""`xke analyze deltas`, `xke analyze layers` and `xke experiment` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from xke.cli import main

NAMES = ("model.layers.1.mlp.down_proj.weight", "model.layers.2.mlp.down_proj.weight")


def _write_run(d: Path, deltas: dict[str, torch.Tensor], **meta) -> Path:
    from safetensors.torch import save_file
    d.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in deltas.items()}, str(d / "deltas.safetensors"))
    base = {"protocol": "batch", "batch_size": 4, "n": 4, "method": "memit", "model": "m", "bench": "jsonl"}
    (d / "deltas.json").write_text(json.dumps({**base, **meta}))
    return d


def _three_runs(tmp_path: Path, seed: int = 0, bs: int = 4, tag: str = "") -> tuple[Path, Path, Path]:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(24, 8, generator=gen))
    zh = {n: q[:, :4] @ torch.randn(4, 12, generator=gen) for n in NAMES}
    en = {n: q[:, 4:] @ torch.randn(4, 12, generator=gen) for n in NAMES}
    mix = {n: zh[n] + en[n] for n in NAMES}
    return (_write_run(tmp_path / f"zh{tag}", zh, edit_lang="zh", batch_size=bs),
            _write_run(tmp_path / f"en{tag}", en, edit_lang="en", batch_size=bs),
            _write_run(tmp_path / f"mix{tag}", mix, edit_lang="mix", batch_size=bs))


def test_analyze_deltas_writes_geometry_and_png(tmp_path, capsys):
    zh, en, mix = _three_runs(tmp_path)
    out = tmp_path / "geo"
    assert main(["analyze", "deltas", "--zh", str(zh), "--en", str(en), "--mix", str(mix), "--out", str(out)]) == 0
    geom = json.loads((out / "geometry.json").read_text())
    assert list(geom) == list(NAMES)
    for g in geom.values():
        assert set(g) == {"independence", "additivity"}
        for pair in g.values():
            assert set(pair) == {"cosine", "jaccard", "principal_angle_deg", "relative_error"}
        assert abs(g["independence"]["cosine"]) < 1e-5
        assert g["independence"]["principal_angle_deg"] == pytest.approx(90.0, abs=1e-3)
        assert g["additivity"]["relative_error"] == pytest.approx(0.0, abs=1e-5)
    png = out / "geometry.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "independence" in capsys.readouterr().out


def test_analyze_deltas_layer_option_and_errors(tmp_path, capsys):
    zh, en, mix = _three_runs(tmp_path)
    out = tmp_path / "one"
    assert main(["analyze", "deltas", "--zh", str(zh), "--en", str(en), "--mix", str(mix),
                 "--layer", NAMES[1], "--out", str(out)]) == 0
    assert list(json.loads((out / "geometry.json").read_text())) == [NAMES[1]]
    capsys.readouterr()
    # unknown matrix name -> exit 2 listing the available names
    assert main(["analyze", "deltas", "--zh", str(zh), "--en", str(en), "--mix", str(mix),
                 "--layer", "model.layers.9.mlp.down_proj.weight", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "available" in err and NAMES[0] in err
    # a different batch size -> clear error
    _write_run(tmp_path / "en_bs8", {n: torch.ones(24, 12) for n in NAMES}, edit_lang="en", batch_size=8)
    assert main(["analyze", "deltas", "--zh", str(zh), "--en", str(tmp_path / "en_bs8"), "--mix", str(mix),
                 "--out", str(out)]) == 2
    assert "batch_size differs" in capsys.readouterr().err
    # swapped languages -> clear error
    assert main(["analyze", "deltas", "--zh", str(en), "--en", str(zh), "--mix", str(mix), "--out", str(out)]) == 2
    assert "edited in 'en', not 'zh'" in capsys.readouterr().err
    # different matrices
    _write_run(tmp_path / "mix_other", {"model.layers.3.mlp.down_proj.weight": torch.ones(24, 12)}, edit_lang="mix")
    assert main(["analyze", "deltas", "--zh", str(zh), "--en", str(en), "--mix", str(tmp_path / "mix_other"),
                 "--out", str(out)]) == 2
    assert "different matrices" in capsys.readouterr().err
    # no deltas file
    (tmp_path / "empty").mkdir()
    assert main(["analyze", "deltas", "--zh", str(tmp_path / "empty"), "--en", str(en), "--mix", str(mix),
                 "--out", str(out)]) == 2
    assert "--save-deltas" in capsys.readouterr().err


def test_analyze_deltas_several_batch_sizes_figure1(tmp_path):
    runs = [_three_runs(tmp_path, seed=s, bs=bs, tag=f"_{bs}") for s, bs in enumerate((1, 10))]
    out = tmp_path / "fig"
    argv = ["analyze", "deltas", "--zh", *[str(r[0]) for r in runs], "--en", *[str(r[1]) for r in runs],
            "--mix", *[str(r[2]) for r in runs], "--out", str(out)]
    assert main(argv) == 0
    assert (out / "1" / "geometry.json").exists() and (out / "10" / "geometry.json").exists()
    assert set(json.loads((out / "geometry_by_run.json").read_text())) == {"1", "10"}
    assert (out / "figure1.png").read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------------ layers
def test_separation_stats_constructed():
    from xke.analysis.layers import layer_report, separation_stats
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(40, 16, generator=gen)
    shift = torch.zeros(16)
    shift[0] = 5.0
    st = separation_stats(base + shift, base)  # every pair differs by exactly the language vector
    assert st["projection_difference"] == pytest.approx(5.0, abs=1e-6)
    assert st["delta_cosine"] == pytest.approx(1.0, abs=1e-9)
    # two layers: no language difference vs a clear one -> the second is suggested
    noise = 0.01 * torch.randn(40, 16, generator=gen)
    a = torch.stack([base + noise, base + shift], dim=1)
    b = torch.stack([base, base], dim=1)
    rep = layer_report(a, b, [3, 7])
    assert rep["suggested_layer"] == 7 and rep["n_pairs"] == 40
    assert {"projection_zh", "projection_en", "separation", "delta_cosine", "pair_cosine"} <= set(rep["layers"][0])


def test_subject_last_token():
    from xke.analysis.layers import subject_last_token
    text = "Where was Anna Lee born?"
    offsets = [(0, 5), (5, 9), (9, 14), (14, 18), (18, 23), (23, 24)]
    assert subject_last_token(offsets, text, "Anna Lee") == 3
    assert subject_last_token(offsets, text, "Bob") is None


def _write_parallel_jsonl(path: Path, n: int = 12) -> Path:
    from xke.data.schema import EditCase, LangView
    names = ["Alice", "Bob", "Carol", "David", "Erin", "Frank", "Grace", "Henry", "Iris", "Jack", "Kate", "Leo"]
    zh_names = ["爱丽丝", "鲍勃", "卡罗尔", "大卫", "艾琳", "弗兰克", "格蕾丝", "亨利", "艾瑞丝", "杰克", "凯特", "里奥"]
    lines = []
    for i in range(n):
        views = {"en": LangView(subject=names[i], prompt=f"Where was {names[i]} born?", target_new="Paris"),
                 "zh": LangView(subject=zh_names[i], prompt=f"{zh_names[i]}出生在哪里？", target_new="巴黎")}
        lines.append(EditCase(case_id=f"p{i}", views=views).to_json())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_analyze_layers_cli_tiny_model(tmp_path, capsys):
    data = _write_parallel_jsonl(tmp_path / "pairs.jsonl")
    out = tmp_path / "layers"
    rc = main(["analyze", "layers", "--model", "tiny-llama", "--bench", "jsonl", "--data", str(data),
               "--layers", "1-3", "--tsne-max", "12", "--device", "cpu", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads((out / "layers.json").read_text())
    assert [r["layer"] for r in rep["layers"]] == [1, 2, 3]
    assert rep["suggested_layer"] in (1, 2, 3) and rep["n_pairs"] == 12
    assert rep["subject_not_found"] == {"zh": 0, "en": 0}
    for f in ("layers.png", "pca_tsne.png"):
        assert (out / f).read_bytes()[:4] == b"\x89PNG"
    assert "suggested layer" in capsys.readouterr().out
    # MLP-output site, PCA only
    rc = main(["analyze", "layers", "--model", "tiny-llama", "--bench", "jsonl", "--data", str(data), "--site", "mlp",
               "--no-tsne", "--device", "cpu", "--out", str(tmp_path / "mlp")])
    assert rc == 0
    # bad layer -> exit 2
    assert main(["analyze", "layers", "--model", "tiny-llama", "--bench", "jsonl", "--data", str(data),
                 "--layers", "7", "--device", "cpu", "--out", str(out)]) == 2
    assert "out of range" in capsys.readouterr().err


# ------------------------------------------------------------------------ experiment
def test_packaged_experiment_configs_expand(capsys):
    from xke.eval.experiment import resolve_config
    from xke.eval.experiment import load_experiment, select_runs
    clm = load_experiment(resolve_config("clm_bench"))
    table = [r for r in clm.runs if r.grid == "table"]
    assert len(table) == 3 * 3 * 4
    assert {r.fields["method"] for r in table} == {"memit", "alphaedit", "pmet"}
    assert {r.fields["edit_lang"] for r in table} == {"zh", "en", "mix"}
    assert {r.fields["batch_size"] for r in table} == {1, 10, 100, 1000}
    geo = [r for r in clm.runs if r.grid == "geometry"]
    assert all(r.fields["limit"] == r.fields["batch_size"] for r in geo)
    layers = load_experiment(resolve_config("clm_bench_layers"))
    assert {r.labels["method_overrides"] for r in layers.runs} == {"L4-8", "L9-12", "L13-17"}
    toy = load_experiment(resolve_config("toy_clm"))
    assert {r.fields["batch_size"] for r in toy.runs} == {1, 10, 100}
    sel = select_runs(toy.runs, ["method=memit", "batch_size=1,10", "table/*"])
    assert len(sel) == 6
    assert main(["experiment", "toy_clm", "--dry-run", "--only", "edit_lang=mix"]) == 0
    assert capsys.readouterr().out.count("\n") == 6
    assert main(["experiment", "no_such_experiment", "--dry-run"]) == 2


def test_experiment_runs_grid_and_writes_report(tmp_path):
    """A tiny grid with the no-op method through the real runner: report.md with the CLM layout."""
    pytest.importorskip("xke.eval.runner")
    data = _write_parallel_jsonl(tmp_path / "cases.jsonl", n=4)
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        "name: tiny\n"
        "defaults: {model: tiny-llama, bench: jsonl, data: cases.jsonl, test_langs: [zh, en], protocol: batch,\n"
        "           device: cpu, max_new_tokens: 2}\n"
        "grid: {method: [none], edit_lang: [zh, en], batch_size: [2]}\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["experiment", str(cfg), "--out", str(out)]) == 0
    for name in ("none-zh-bs2", "none-en-bs2"):
        assert (out / name / "metrics.json").exists()
    rep = (out / "report.md").read_text()
    assert "CLM-Bench layout" in rep and "| Chinese |" in rep and "| English |" in rep
    summary = json.loads((out / "experiment.json").read_text())
    assert set(summary["runs"]) == {"none-zh-bs2", "none-en-bs2"}
    # unknown run field -> clear error, exit 2
    cfg.write_text("defaults: {model: tiny-llama, data: cases.jsonl, bogus: 1}\ngrid: {method: [none]}\n")
    assert main(["experiment", str(cfg), "--out", str(tmp_path / "o2")]) == 2


# ------------------------------------------------------------------------ the tiny toy world
def test_analyze_layers_on_world(world, tmp_path):
    out = tmp_path / "wl"
    assert main(["analyze", "layers", "--model", f"world:{world}", "--limit", "60", "--no-tsne",
                 "--device", "cpu", "--out", str(out)]) == 0
    rep = json.loads((out / "layers.json").read_text())
    assert rep["n_pairs"] == 60 and rep["source"].startswith("world:")
    assert rep["subject_not_found"] == {"zh": 0, "en": 0}
    assert rep["suggested_layer"] in [r["layer"] for r in rep["layers"]]


def _memit_available() -> bool:
    try:
        from xke.methods.base import get_method_class
        get_method_class("memit")
        return True
    except Exception:
        return False


@pytest.mark.skipif(not _memit_available(), reason="MEMIT is not available in this checkout")
def test_end_to_end_world_memit_eval_then_analyze(world, tmp_path, capsys):
    """xke eval --save-deltas with MEMIT in zh, en and mix on a few world cases, then analyze deltas."""
    dirs = {}
    for lang in ("zh", "en", "mix"):
        dirs[lang] = tmp_path / lang
        rc = main(["eval", "--model", f"world:{world}", "--method", "memit", "--bench", "jsonl",
                   "--data", str(Path(world) / "cases.jsonl"), "--split", "heldout", "--edit-lang", lang,
                   "--test-langs", "zh,en", "--protocol", "batch", "--batch-size", "3", "--limit", "3",
                   "--save-deltas", "--device", "cpu", "--quiet", "--out", str(dirs[lang])])
        assert rc == 0, capsys.readouterr().err
        assert (dirs[lang] / "deltas.safetensors").exists()
    out = tmp_path / "geo"
    assert main(["analyze", "deltas", "--zh", str(dirs["zh"]), "--en", str(dirs["en"]), "--mix", str(dirs["mix"]),
                 "--out", str(out)]) == 0
    geom = json.loads((out / "geometry.json").read_text())
    assert geom and all("down_proj" in n or "c_proj" in n for n in geom)
    for g in geom.values():
        ind, add = g["independence"], g["additivity"]
        assert all(v is not None for v in (*ind.values(), *add.values()))
        # the mixed edit is closer to zh + en than zh is to en
        assert add["cosine"] > ind["cosine"]
        assert add["relative_error"] < ind["relative_error"]
    assert (out / "geometry.png").exists()


def test_experiment_geometry_groups_per_grid(tmp_path, monkeypatch):
    """Two grids that share run fields keep separate zh/en/mix groups; analysis lands in OUT/analysis."""
    import xke.eval.runner as runner

    def fake_run_eval(spec, loaded=None, **kw):
        gen = torch.Generator().manual_seed(spec.batch_size + (7 if "geo" in spec.out else 0))
        base = {n: torch.randn(24, 12, generator=gen) for n in NAMES}
        other = {n: torch.randn(24, 12, generator=gen) for n in NAMES}
        d = {"zh": base, "en": other, "mix": {n: base[n] + other[n] for n in NAMES}}[spec.edit_lang]
        out = _write_run(Path(spec.out), d, edit_lang=spec.edit_lang, batch_size=spec.batch_size, method=spec.method)
        (out / "metrics.json").write_text(json.dumps({"method": spec.method, "model": spec.model,
                                                      "edit_lang": spec.edit_lang, "batch_size": spec.batch_size,
                                                      "by_test_lang": {}, "clm": {}}))
        return {}

    monkeypatch.setattr(runner, "run_eval", fake_run_eval)
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        "defaults: {model: tiny-llama, data: x.jsonl, protocol: batch, device: cpu, method: none}\n"
        "grids:\n"
        "  - {name: table, defaults: {limit: 4}, grid: {edit_lang: [zh, en, mix], batch_size: [2, 4]}}\n"
        "  - {name: geo, defaults: {limit: '{batch_size}'}, grid: {edit_lang: [zh, en, mix], batch_size: [2, 4]}}\n"
        "analyze: {deltas: {top_p: 10, k: 5}}\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["experiment", str(cfg), "--out", str(out)]) == 0
    summary = json.loads((out / "experiment.json").read_text())
    assert set(summary["geometry"]) == {"table/none-zh-en-mix-bs2", "table/none-zh-en-mix-bs4",
                                        "geo/none-zh-en-mix-bs2", "geo/none-zh-en-mix-bs4"}
    for p in summary["geometry"].values():
        g = json.loads(Path(p).read_text())
        assert g[NAMES[1]]["additivity"]["relative_error"] == pytest.approx(0.0, abs=1e-5)
        assert Path(p).is_relative_to(out / "analysis")
    assert {Path(p).name for p in summary["figures"]} == {"figure1-table-none.png", "figure1-geo-none.png"}
    rep = (out / "report.md").read_text()
    assert "Geometry of edit deltas" in rep and "geo/none-zh-en-mix-bs4" in rep
