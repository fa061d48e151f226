"""``xke demo``: the paper's story on the toy world, in one table, one figure and three sentences.

On the tiny toy world (seed 0) and its held-out edit cases (every held-out fact: 30), each method
edits in English and in Chinese and is tested in both languages (single protocol):

- the weight-editing baselines and the unedited model (``none``) on the world model: an English edit
  reaches English questions, not Chinese ones (CLM-Bench's cross-lingual misalignment);
- ``xkde`` on the X-KDE-trained model, the edit in context (gold mode): the edit reaches both languages;
- ``xkde`` again with ``memory`` edits in its edit memory (the case's own and ``memory - 1`` about
  invented people; retrieve mode): the retriever decides what goes in context, so questions about
  other facts (locality) keep their answers.

The world, its retriever and the X-KDE model are shipped artifacts (:mod:`xke.artifacts`), so the
demo trains nothing; ``rebuild=True`` (``xke demo --rebuild``) builds all three from scratch with the
project's own commands first (~18 CPU-minutes) and reports which files came out bit-identical.
Outputs in ``OUT``: ``runs/<label>-<edit lang>/`` (one ``xke eval`` run each), ``report.md`` (the table
and sentences, also printed), ``heatmap.png`` (reliability, edit language x test language, per row),
``demo.json`` (the figures), ``heldout.jsonl`` (the cases).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError, XkeError

#: rows of the demo, in table order (``xkde`` adds the edit-memory row when ``memory > 0``)
DEFAULT_METHODS = ("none", "ft-m", "rome", "memit", "alphaedit", "pmet", "xkde")
EDIT_LANGS = ("en", "zh")
PAIRS = tuple((e, t) for e in EDIT_LANGS for t in EDIT_LANGS)


def _say(msg: str) -> None:
    print(f"xke demo: {msg}", file=sys.stderr, flush=True)


def available_methods(names: Sequence[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """Methods whose module imports (in the given order), and why the others were skipped."""
    from .methods.base import get_method_class

    ok, skipped = [], {}
    for name in (names or DEFAULT_METHODS):
        try:
            get_method_class(name)
            ok.append(name)
        except ConfigError as e:
            skipped[name] = str(e)
        except ImportError as e:  # an optional dependency of that method is missing
            skipped[name] = f"needs {e.name or e}"
    return ok, skipped


def rebuild_artifacts(out: str | Path, preset: str = "tiny", seed: int = 0, *, force: bool = True,
                      progress: bool = True) -> tuple[Path, Path]:
    """Build the demo's world (``preset``, ``seed``), its retriever and an X-KDE model (``toy`` recipe) with the
    commands in :data:`xke.artifacts.COMMANDS`; returns ``(world_dir, xkde_model_dir)``. ``force``: every step
    from scratch, the world in ``out/world``; else the cached world (and retriever) is reused and the recipe in
    ``out/xkde`` resumes."""
    from .train.recipe import load_train_config, run_recipe
    from .world.build import build_world, world_model_dir
    from .world.retriever import train_world_retriever
    from .world.xeit_source import WorldSource

    out = Path(out)
    t0 = time.time()
    wd = out / "world" if force else None   # not forced: the cached world of `xke world build` (built if missing)
    _say(f"[1/3] building the '{preset}' toy world (seed {seed}){f' into {wd}' if wd else ''} ...")
    wd = build_world(preset=preset, seed=seed, out=wd, force=force, verbose=progress)
    _say(f"[2/3] training its cross-lingual retriever ({time.time() - t0:.0f} s so far) ...")
    if force or not (wd / "retriever" / "modules.json").exists():
        train_world_retriever(wd, wd / "retriever")
    _say(f"[3/3] training X-KDE on it (`xke train xkde --preset toy`; {time.time() - t0:.0f} s so far) ...")
    xdir = out / "xkde"
    if force and xdir.exists():
        shutil.rmtree(xdir)
    cfg = load_train_config("toy", overrides={"data": {"langs": list(EDIT_LANGS)}})
    run_recipe(str(world_model_dir(wd)), [WorldSource(f"world:{wd}")], xdir, cfg, log=lambda m: _say(f"  recipe {m}"))
    _say(f"rebuilt in {time.time() - t0:.0f} s")
    return wd, xdir / "model"


def compare_with_shipped(world_dir: Path, xkde_dir: Path) -> dict[str, bool]:
    """For each file a rebuild reproduces bit for bit (:data:`xke.artifacts.DETERMINISTIC`): does the rebuilt
    one equal the shipped one (sha256)?"""
    from .artifacts import DETERMINISTIC, load_manifest
    from .fsutil import hash_path

    files = load_manifest()["files"]
    roots = {"world": world_dir, "xkde": xkde_dir}
    out = {}
    for rel in DETERMINISTIC:
        top, _, rest = rel.partition("/")
        out[rel] = hash_path(roots[top] / rest) == files.get(rel)
    return out


def _row_figures(m_by_lang: dict[tuple[str, str], dict]) -> dict[str, Any]:
    """Reliability EM per (edit, test) pair and locality EM averaged over the pairs, from metrics blocks."""
    rel = {f"{e}->{t}": (m_by_lang[(e, t)].get("reliability") or {}).get("em") for e, t in PAIRS if (e, t) in m_by_lang}
    loc = [(b.get("locality") or {}).get("em") for b in m_by_lang.values()]
    loc = [x for x in loc if x is not None]
    return {"reliability": rel, "locality": round(sum(loc) / len(loc), 2) if loc else None}


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def render_table(rows: Sequence[dict[str, Any]]) -> str:
    """The demo's table: reliability (EM) per edit -> test language, and locality (EM), per row."""
    head = ["Method", "model"] + [f"{e}→{t}" for e, t in PAIRS] + ["locality"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|"]
    for r in rows:
        lines.append("| " + " | ".join([r["label"], r["model"]] + [_fmt(r["reliability"].get(f"{e}->{t}"))
                                                                     for e, t in PAIRS] + [_fmt(r["locality"])]) + " |")
    return "\n".join(lines)


def story(rows: Sequence[dict[str, Any]], memory: int) -> list[str]:
    """The three sentences: what the numbers show (only those whose rows were run)."""
    by = {r["key"]: r for r in rows}
    weight = [r for r in rows if r["kind"] == "weight" and r["reliability"].get("en->en") is not None]
    out = []
    if weight:
        best = max(weight, key=lambda r: r["reliability"]["en->en"])
        base = by.get("none")
        tail = f" (unedited model: {_fmt(base['reliability'].get('en->zh'))}%)" if base else ""
        out.append(f"Weight editing in English reaches English but not Chinese: the best weight editor, "
                   f"{best['label']}, gives the new answer to {_fmt(best['reliability']['en->en'])}% of the edited "
                   f"English questions and to {_fmt(best['reliability'].get('en->zh'))}% of the same questions in "
                   f"Chinese{tail}.")
    x = by.get("xkde")
    if x:
        out.append(f"The X-KDE-trained model, reading the edit in context, carries it across languages: "
                   f"{_fmt(x['reliability'].get('en->zh'))}% of the Chinese questions after an English edit and "
                   f"{_fmt(x['reliability'].get('zh->en'))}% of the English questions after a Chinese edit "
                   f"({_fmt(x['reliability'].get('en->en'))}% / {_fmt(x['reliability'].get('zh->zh'))}% in the "
                   f"edit's own language).")
    xm = by.get("xkde-memory")
    if xm:
        gold = f", against {_fmt(x['locality'])}% when the edit is put in front of every question" if x else ""
        out.append(f"With {memory:,} edits in its memory the retriever decides what goes in context: reliability "
                   f"stays at {_fmt(xm['reliability'].get('en->zh'))}% (en→zh) and locality, answers to questions "
                   f"about facts no edit changed, is {_fmt(xm['locality'])}%{gold}.")
    return out


def run_demo(out: str | Path | None = None, n: int = 30, preset: str = "tiny", methods: Sequence[str] | None = None,
             progress: bool = True, system_prompt: str | None = None, *, rebuild: bool = False,
             memory: int = 1000) -> str:
    """Run the demo (see the module docstring); returns the report's markdown (also printed)."""
    from .eval.report import load_run, write_heatmap
    from .eval.runner import EvalSpec, run_eval
    from .fsutil import prepare_out_dir
    from .methods.base import METHOD_MODULES, get_method_class
    from .models.loading import load_model
    from .world.provider import model_path

    unknown = [m for m in (methods or []) if m.lower() not in METHOD_MODULES]
    if unknown:  # before building anything
        raise ConfigError(f"--methods: unknown method(s) {unknown}; available: {', '.join(METHOD_MODULES)}")
    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    if memory < 0:
        raise ConfigError(f"--memory must be >= 0 (0: no edit-memory row), got {memory}")
    out = prepare_out_dir(out or "runs/demo")
    t_wall, t_cpu = time.time(), time.process_time()

    from .artifacts import demo_artifacts
    if preset == "tiny" and not rebuild:
        world_dir, xkde_dir = demo_artifacts()
        _say("using the shipped tiny toy world, its retriever and X-KDE model "
             "(`xke demo --rebuild` trains them from scratch: ~18 CPU-minutes)")
    else:
        if not rebuild:
            _say(f"no shipped artifacts for the '{preset}' world: building them (the default world: about an hour "
                 "of CPU; resumable)")
        world_dir, xkde_dir = rebuild_artifacts(out / "build", preset, force=rebuild, progress=progress)
        if preset == "tiny":
            same = compare_with_shipped(world_dir, xkde_dir)
            for rel, ok in same.items():
                _say(f"  {rel}: {'bit-identical to the shipped file' if ok else 'DIFFERS from the shipped file'}")

    from .data.loaders import write_jsonl
    from .world.world import load_world

    world = load_world(world_dir)
    cases = world.counterfactual_cases("heldout", per_subject=5)[:n]
    data = write_jsonl(out / "heldout.jsonl", cases)
    names, skipped = available_methods(methods)
    for name, why in skipped.items():
        _say(f"skipping {name}: {why}")
    retriever = world_dir / "retriever"
    jobs: list[tuple[str, str, str, Any]] = []   # (row key, label, model kind, spec)
    for name in names:
        is_x = name.lower() == "xkde"
        model = str(xkde_dir) if is_x else f"world:{world_dir}"
        label = "xkde (gold)" if is_x else name
        for el in EDIT_LANGS:
            jobs.append((name, label, "X-KDE-trained" if is_x else "world",
                         EvalSpec(model=model, out=str(out / "runs" / f"{name}-{el}"), method=name, bench="jsonl",
                                  data=str(data), edit_lang=el, test_langs=list(EDIT_LANGS), protocol="single",
                                  system_prompt=system_prompt)))
        if is_x and memory > 0:
            from .eval.pairs import distractor_memory_spec
            for el in EDIT_LANGS:
                spec = distractor_memory_spec(str(xkde_dir), world.distractor_edits(memory - 1, el), retriever, data,
                                              out / "runs" / "xkde-memory", el, list(EDIT_LANGS), max_new_tokens=16)
                spec.system_prompt = system_prompt
                jobs.append(("xkde-memory", f"xkde ({memory:,} edits in memory)", "X-KDE-trained", spec))
    _say(f"{len(cases)} held-out edit cases; {len(jobs)} runs (each method edits in en and in zh, tests en and zh)")
    loaded: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    for i, (key, label, kind_model, spec) in enumerate(jobs, 1):
        if Path(spec.out).exists():
            shutil.rmtree(spec.out)   # the demo's own run folders: always a fresh result
        if spec.model not in loaded:
            loaded[spec.model] = load_model(str(model_path(spec.model)))
        _say(f"[{i}/{len(jobs)}] {label}, edit in {spec.edit_lang} ({time.time() - t_wall:.0f} s so far)")
        try:
            run_eval(spec, loaded=loaded[spec.model], progress=progress)
        except XkeError as e:
            _say(f"{label} could not run here: {e}")
            continue
        except Exception as e:  # noqa: BLE001 - one broken method must not hide the others' results
            _say(f"{label} failed: {type(e).__name__}: {e}")
            continue
        m = load_run(spec.out)
        row = results.setdefault(key, {"key": key, "label": label, "model": kind_model, "runs": {}, "dirs": []})
        row["dirs"].append(spec.out)
        for t in spec.test_langs:
            row["runs"][(spec.edit_lang, t)] = m["by_test_lang"].get(t, {})
        row["_metrics"] = row.get("_metrics", []) + [m]
    if not results:
        raise XkeError("no method could be evaluated")
    rows = []
    for key, r in results.items():
        kind = "memory" if key == "xkde-memory" else get_method_class(key).kind
        rows.append({"key": key, "label": r["label"], "model": r["model"], "kind": kind, **_row_figures(r["runs"]),
                     "dirs": r["dirs"]})
    sentences = story(rows, memory)
    # one heatmap panel per row, titled by the row's label alone
    runs = [dict(m, method=r["label"], model=None, _spec={}) for r in results.values() for m in r["_metrics"]]
    heat = write_heatmap(runs, out / "heatmap.png", key="em")
    wall, cpu = time.time() - t_wall, time.process_time() - t_cpu
    md = "\n".join([
        "# xke demo: edit once, in one language; who answers in the other?", "",
        f"Tiny toy world (seed 0), {len(cases)} held-out edits; each row edits in en and in zh (single edits) "
        "and is asked the edited question in en and zh. Reliability: exact match with the new answer (%); "
        "locality: exact match with the unedited model's answer to a question about another fact (%), "
        "mean over the four edit → test pairs.", "",
        render_table(rows), "", " ".join(sentences), "",
        f"Figure: {heat} (reliability, edit language × test language, per row). "
        f"Runs: {out / 'runs'}. {wall:.0f} s wall, {cpu:.0f} CPU-s in this process.", ""])
    (out / "report.md").write_text(md, encoding="utf-8")
    (out / "demo.json").write_text(json.dumps({"n_cases": len(cases), "memory": memory, "rows": rows,
                                               "sentences": sentences, "wall_seconds": round(wall, 1),
                                               "cpu_seconds": round(cpu, 1)}, indent=1, ensure_ascii=False))
    print(md)
    _say(f"wrote {out / 'report.md'}, {heat}, {out / 'demo.json'}")
    return md
