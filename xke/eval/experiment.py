"""Experiment grids: ``xke experiment CONFIG``.

:func:`run_experiment` expands a YAML grid of :class:`xke.eval.runner.EvalSpec`
fields into runs, runs each with :func:`xke.eval.runner.run_eval` (finished
runs resume/skip), merges the reports with :mod:`xke.eval.report`, adds the
CLM-Bench Table 1/2 layout and, for every group of zh/en/mix runs with saved
deltas, the geometry analysis (:func:`xke.analysis.deltas.analyze_deltas`).

Experiment YAML::

    name: toy_clm
    defaults:              # EvalSpec fields shared by every run (same names as xke eval's flags)
      model: world
      bench: jsonl
      protocol: batch
      save_deltas: true
    grid:                  # cartesian product; list order = run order
      method: [memit]
      edit_lang: [zh, en, mix]
      batch_size: [1, 10, 100]
    runs:                  # optional extra runs (mappings of fields), added after the grid
      - {method: memit, edit_lang: zh, batch_size: 5}
    name_format: "{method}-{edit_lang}-bs{batch_size}"   # run directory names
    analyze:
      deltas: {layer: null, top_p: 5, k: 10}   # geometry for zh/en/mix groups (omit to skip)

``grids:`` (a list of ``{name, defaults, grid}``) may replace ``grid`` for
several grids in one file. A string value ``"{field}"`` is replaced by that
field's value (``limit: "{batch_size}"`` gives one batch per run).
Relative ``data`` paths are resolved against the YAML's folder first, then
the current directory; ``data: world`` means the cases.jsonl of the ``world``/``world:DIR``
model. ``--set key=value`` replaces a field in every run.

Outputs: ``OUT/<run name>/`` per run (``<grid>/<run>`` with ``grids:``),
``OUT/merged/`` (:func:`xke.eval.report.merge_runs`), ``OUT/analysis/<group>/geometry.json``
per zh/en/mix group, ``OUT/analysis/figure1-*.png`` across batch sizes, ``OUT/report.md`` and
``OUT/experiment.json``. ``--only key=value[,value]`` (repeatable) or a run-name
glob selects runs.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..analysis.deltas import DELTAS_FILE, analyze_deltas, default_matrix, figure1, geometry_table
from ..errors import ConfigError, DataError


@dataclass
class RunDef:
    name: str
    fields: dict[str, Any]
    grid: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    fmt: str = "{method}-{edit_lang}-bs{batch_size}"


@dataclass
class Experiment:
    name: str
    runs: list[RunDef]
    analyze: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


_TOP_KEYS = {"name", "description", "defaults", "grid", "grids", "runs", "name_format", "analyze", "paper"}


def _subst(fields: dict[str, Any]) -> dict[str, Any]:
    out = dict(fields)
    for k, v in fields.items():
        if isinstance(v, str):
            m = re.fullmatch(r"\{(\w+)\}", v.strip())
            if m:
                if m.group(1) not in fields:
                    raise ConfigError(f"value {v!r} of {k!r} names a field the run does not have")
                out[k] = fields[m.group(1)]
    return out


def _expand_grid(defaults: Mapping[str, Any], grid: Mapping[str, Any] | None,
                 where: str) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """Cartesian product of the grid over ``defaults``: ``(fields, labels)`` per run. A grid value may
    be a list, or a mapping ``{label: value}`` whose labels name the runs (e.g. layer sets)."""
    grid = dict(grid or {})
    axes: list[tuple[str, list[tuple[str | None, Any]]]] = []
    for k, v in grid.items():
        if isinstance(v, dict) and v:
            axes.append((k, [(str(lb), val) for lb, val in v.items()]))
        elif isinstance(v, list) and v:
            axes.append((k, [(None, val) for val in v]))
        else:
            raise ConfigError(f"{where}: grid value of {k!r} must be a non-empty list or {{label: value}} "
                              f"mapping, got {v!r}")
    out = []
    for combo in itertools.product(*(vals for _, vals in axes)):
        fields = dict(defaults)
        labels = {}
        for (k, _), (lb, val) in zip(axes, combo):
            fields[k] = val
            if lb is not None:
                labels[k] = lb
        out.append((_subst(fields), labels))
    return out


def load_experiment(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Experiment:
    """Parse an experiment YAML into runs (validated names, unique run names); ``overrides``
    (``--set key=value``) replace a field in every run."""
    from ..config import read_yaml
    overrides = dict(overrides or {})
    p = Path(path)
    raw = read_yaml(p)
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{p}: unknown key(s) {unknown}; valid: {sorted(_TOP_KEYS)}")
    name = str(raw.get("name") or p.stem)
    check_run_name(name, p)
    fmt = raw.get("name_format") or "{method}-{edit_lang}-bs{batch_size}"
    defaults = dict(raw.get("defaults") or {})
    grids: list[tuple[str, dict, dict | None]] = []
    if raw.get("grids") is not None:
        if not isinstance(raw["grids"], list):
            raise ConfigError(f"{p}: 'grids' must be a list of {{name, defaults, grid}} mappings")
        for i, gdef in enumerate(raw["grids"]):
            if not isinstance(gdef, dict):
                raise ConfigError(f"{p}: grids[{i}] must be a mapping")
            bad = sorted(set(gdef) - {"name", "defaults", "grid", "name_format"})
            if bad:
                raise ConfigError(f"{p}: grids[{i}] has unknown key(s) {bad}")
            grids.append((str(gdef.get("name", f"grid{i}")), {**defaults, **(gdef.get("defaults") or {})},
                          gdef.get("grid"), gdef.get("name_format")))
    if raw.get("grid") is not None or not grids:
        grids.insert(0, ("", defaults, raw.get("grid"), None))
    runs: list[RunDef] = []
    for gname, gdefaults, grid, gfmt in grids:
        for fields, labels in _expand_grid(gdefaults, grid, f"{p} grid {gname or 'grid'}"):
            fields.update(overrides)
            runs.append(RunDef(_run_name(gfmt or fmt, {**fields, **labels}, gname), fields, gname, labels,
                               gfmt or fmt))
    for i, extra in enumerate(raw.get("runs") or []):
        if not isinstance(extra, dict):
            raise ConfigError(f"{p}: runs[{i}] must be a mapping of EvalSpec fields")
        fields = _subst({**defaults, **extra, **overrides})
        runs.append(RunDef(str(extra.get("name") or _run_name(fmt, fields, "")), {k: v for k, v in fields.items() if k != "name"}))
    seen: dict[str, int] = {}
    for r in runs:
        check_run_name(r.name, p)
        if r.name in seen:
            raise ConfigError(f"{p}: two runs are both named {r.name!r}; add the varying field to name_format")
        seen[r.name] = 1
    for r in runs:
        r.fields = _resolve_data(r.fields, p.parent)
    analyze = raw.get("analyze") or {}
    if not isinstance(analyze, dict):
        raise ConfigError(f"{p}: 'analyze' must be a mapping")
    return Experiment(name=name, runs=runs, analyze=analyze, path=p)


def check_run_name(name: str, source: Path | str) -> None:
    """Refuse a run or experiment name that would write outside the output folder (absolute, ``..``,
    empty parts, a drive or backslash), naming ``source``."""
    parts = name.replace("\\", "/").split("/")
    if (not name or name.startswith(("/", "~")) or "\\" in name or ":" in name or "\x00" in name
            or any(part in ("", ".", "..") for part in parts)):
        raise ConfigError(f"{source}: run name {name!r} is not a plain relative folder name (no '..', '/' at the "
                          "start, empty parts, ':' or backslashes); results must stay inside --out")


def _run_name(fmt: str, fields: Mapping[str, Any], grid: str) -> str:
    class _D(dict):
        def __missing__(self, key):
            return "na"
    name = fmt.format_map(_D({k: (",".join(map(str, v)) if isinstance(v, list) else v) for k, v in fields.items()}))
    name = re.sub(r"[^\w.,+=-]+", "_", name)
    return f"{grid}/{name}" if grid else name


def _resolve_data(fields: dict[str, Any], base: Path) -> dict[str, Any]:
    d = fields.get("data")
    if isinstance(d, str) and d and not Path(d).expanduser().is_absolute():
        cand = base / d
        if cand.exists():
            fields = {**fields, "data": str(cand)}
    return fields


def select_runs(runs: Sequence[RunDef], only: Sequence[str] | None) -> list[RunDef]:
    """Filter by ``key=v1,v2`` terms (all must hold) and/or run-name globs (any may match)."""
    if not only:
        return list(runs)
    conds: list[tuple[str, set[str]]] = []
    globs: list[str] = []
    for term in only:
        for part in re.split(r"\s+", term.strip()):
            if not part:
                continue
            if "=" in part:
                k, v = part.split("=", 1)
                conds.append((k.strip(), {x.strip() for x in v.split(",")}))
            else:
                globs.append(part)
    out = []
    for r in runs:
        ok = all(str(r.labels.get(k, _flat(r.fields.get(k)))) in vals for k, vals in conds)
        if ok and globs:
            ok = any(fnmatch.fnmatch(r.name, g) for g in globs)
        if ok:
            out.append(r)
    if not out:
        raise ConfigError(f"--only {' '.join(only)} selects no run; runs: {[r.name for r in runs][:20]}")
    return out


def _flat(v: Any) -> Any:
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v


def build_spec(fields: Mapping[str, Any], out: Path):
    """An :class:`xke.eval.runner.EvalSpec` from YAML fields (unknown fields / bad types → clear error)."""
    from .runner import EvalSpec
    kw = dict(fields)
    kw["out"] = str(out)
    if isinstance(kw.get("test_langs"), str):
        kw["test_langs"] = [x.strip() for x in kw["test_langs"].split(",") if x.strip()]
    spec = EvalSpec.from_dict(kw, source=f"experiment run {out.name}")
    spec.validate()
    return spec


def _group_key(fields: Mapping[str, Any]) -> str:
    rest = {k: _flat(v) for k, v in fields.items() if k not in ("edit_lang", "out")}
    return json.dumps(rest, sort_keys=True, default=str)


def delta_groups(done: Sequence[tuple[RunDef, Path]]) -> list[dict[str, Any]]:
    """Groups of runs identical except for edit_lang that have zh, en and mix."""
    groups: dict[str, dict[str, Any]] = {}
    for r, d in done:
        label = _run_name(r.fmt, {**r.fields, **r.labels, "edit_lang": "zh-en-mix"}, r.grid)
        g = groups.setdefault(r.grid + "|" + _group_key(r.fields), {"fields": {k: v for k, v in r.fields.items() if k != "edit_lang"},
                                                     "dirs": {}, "grid": r.grid, "label": label,
                                                     "labels": r.labels})
        g["dirs"][str(r.fields.get("edit_lang"))] = d
    return [g for g in groups.values() if {"zh", "en", "mix"} <= set(g["dirs"])
            and all((g["dirs"][x] / DELTAS_FILE).exists() for x in ("zh", "en", "mix"))]


def _short_model(model: Any) -> str:
    m = str(model or "")
    if m.startswith("world:"):
        return "world:" + Path(m[6:].rstrip("/")).name
    return Path(m).name if "/" in m else m


def clm_table(runs: Sequence[tuple[str, Path]]) -> str:
    """CLM-Bench Table 1/2 layout (markdown) from the runs' metrics.json (tf_acc, percent; locality forced on the
    dataset's answer where the profile does so); ``runs`` = (run name, run dir). See
    :func:`xke.eval.report.render_clm`."""
    from .report import load_run, render_clm

    done = [(name, load_run(d)) for name, d in runs if (Path(d) / "metrics.json").exists()]
    ms = [dict(m, model=_short_model(m.get("model"))) for _, m in done]
    return render_clm(ms, [str(m.get("method", "")) for m in ms], batch=True, names=[n for n, _ in done])


def world_data(fields: dict[str, Any]) -> dict[str, Any]:
    """``data: world`` (with ``bench: jsonl`` and a ``world``/``world:DIR`` model) → that world's cases.jsonl."""
    if str(fields.get("data", "")) != "world":
        return fields
    model = str(fields.get("model", ""))
    if not (model == "world" or model.startswith("world:")):
        raise ConfigError(f"data: world needs model world or world:DIR, got model {model!r}")
    from ..world.provider import world_dir_of
    wd = world_dir_of(model)
    if wd is not None and (wd / "cases.jsonl").exists():
        return {**fields, "data": str(wd / "cases.jsonl"), "bench": fields.get("bench") or "jsonl"}
    raise DataError(f"no cases.jsonl in the world of {model}")


def run_experiment(config: str | Path, out: str | Path | None = None, *, only: Sequence[str] | None = None,
                   dry_run: bool = False, analyze: bool = True,
                   overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run (or resume) every selected run of ``config`` under ``out/<run name>``; write
    ``out/report.md`` (merged eval report + CLM-Bench table + geometry) and ``out/experiment.json``."""
    exp = load_experiment(config, overrides)
    root = Path(out) if out else Path("runs") / exp.name
    runs = select_runs(exp.runs, only)
    if dry_run:
        for r in runs:
            print(f"{r.name}: {json.dumps(r.fields, ensure_ascii=False, default=str)}")
        return {"runs": [r.name for r in runs]}
    from .runner import run_eval
    from ..methods.base import get_method_class
    # validate every run before running any (unknown fields, bad values, unavailable methods)
    specs = [build_spec(r.fields, root / r.name) for r in runs]
    for spec in specs:
        get_method_class(spec.method)
    from ..fsutil import prepare_out_dir
    prepare_out_dir(root)
    done: list[tuple[RunDef, Path]] = []
    loaded_key, loaded = None, None
    for i, r in enumerate(runs, 1):
        d = root / r.name
        print(f"[{i}/{len(runs)}] {r.name}", flush=True)
        spec = build_spec(world_data(r.fields), d)
        key = (spec.model, spec.dtype, spec.device)
        if key != loaded_key:  # one model in memory at a time, reused by consecutive runs
            from ..models.loading import load_model
            from ..world.provider import model_path
            loaded = None
            loaded = load_model(str(model_path(spec.model)), dtype=spec.dtype, device=spec.device)
            loaded_key = key
        run_eval(spec, loaded=loaded)
        done.append((r, d))
    summary: dict[str, Any] = {"name": exp.name, "config": str(exp.path), "runs": {r.name: str(d) for r, d in done}}
    # geometry of zh/en/mix groups
    geo_rows: list[tuple[str, str, Mapping[str, Any]]] = []
    deltas_opts = exp.analyze.get("deltas") if analyze else None
    figures = []
    if deltas_opts is not None:
        opts = dict(deltas_opts or {})
        bad = sorted(set(opts) - {"layer", "top_p", "k"})
        if bad:
            raise ConfigError(f"{exp.path}: analyze.deltas has unknown key(s) {bad}; valid: layer, top_p, k")
        by_series: dict[str, dict[str, Any]] = {}
        geo_summary = {}
        for g in delta_groups(done):
            f = g["fields"]
            label = g["label"]
            gout = root / "analysis" / label
            geom = analyze_deltas(g["dirs"]["zh"], g["dirs"]["en"], g["dirs"]["mix"], gout,
                                  layer=opts.get("layer"), top_p=float(opts.get("top_p", 5.0)),
                                  k=int(opts.get("k", 10)))
            geo_summary[label] = str(gout / "geometry.json")
            series = json.dumps({k: _flat(v) for k, v in f.items() if k not in ("batch_size", "limit")},
                                sort_keys=True, default=str) + g["grid"]
            tag = " ".join([str(f.get("method"))] + [f"{k}={v}" for k, v in g["labels"].items()])
            by_series.setdefault(series, {"method": tag, "grid": g["grid"], "runs": {}})["runs"][
                str(f.get("batch_size"))] = geom
            name = opts.get("layer") or default_matrix(list(geom))
            geo_rows.append((label, name, geom[name]))
        used: set[str] = set()
        for j, s in enumerate(by_series.values()):
            stem = re.sub(r"[^\w.,+=-]+", "_", f"{s['grid'] + '-' if s['grid'] else ''}{s['method']}")
            if stem in used:
                stem = f"{stem}-{j}"
            used.add(stem)
            png = root / "analysis" / f"figure1-{stem}.png"
            name, _ = figure1(s["runs"], png, layer=opts.get("layer"),
                              title=f"{s['method']}: independence (top) and additivity (bottom)")
            figures.append(str(png))
        summary["geometry"] = geo_summary
        summary["figures"] = figures
    # reports
    run_dirs = [d for _, d in done]
    parts = [f"# Experiment {exp.name}\n"]
    merged = _merge_reports(run_dirs, root)
    if merged:
        parts.append(merged)
    parts.append("## CLM-Bench layout (teacher-forced accuracy)\n\n" + clm_table([(r.name, d) for r, d in done]))
    if geo_rows:
        parts.append("## Geometry of edit deltas (CLM-Bench Figure 1)\n\n" + geometry_table(geo_rows)
                     + "\n" + "\n".join(f"![{Path(p).stem}](analysis/{Path(p).name})" for p in figures) + "\n")
    (root / "report.md").write_text("\n".join(parts), encoding="utf-8")
    (root / "experiment.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {root / 'report.md'}")
    return summary


def _merge_reports(run_dirs: Sequence[Path], root: Path) -> str:
    """Merged eval report of the finished runs (:func:`xke.eval.report.merge_runs`) into ``root/merged``."""
    from .report import merge_runs
    dirs = [d for d in run_dirs if (Path(d) / "metrics.json").exists()]
    if not dirs:
        return ""
    md, _ = merge_runs(dirs, out=root / "merged")
    return "## Merged evaluation report (root/merged)\n\n" + md.split("\n", 1)[-1]


def resolve_config(name: str) -> Path:
    """A YAML path, or the name of a packaged experiment config."""
    p = Path(name).expanduser()
    if p.exists():
        return p
    from ..config import list_presets, preset_path
    stem = name[:-5] if name.endswith(".yaml") else name
    q = preset_path("experiments", stem)
    if q.exists():
        return q
    raise DataError(f"no experiment config {name!r} (not a file; packaged ones: {list_presets('experiments')})")
