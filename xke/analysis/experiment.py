"""Runs of saved edit deltas, and experiment grids.

* :func:`analyze_deltas` — ``xke analyze deltas``: read the
  ``deltas.safetensors`` of a zh, an en and a mix ``xke eval --save-deltas``
  run, check they share protocol, batch size and matrices, and write
  ``geometry.json`` (:func:`xke.analysis.geometry.geometry_report`) and the
  Figure-1 bar charts.
* :func:`run_experiment` — ``xke experiment CONFIG``: expand a YAML grid of
  :class:`xke.eval.runner.EvalSpec` fields into runs, run each with
  :func:`xke.eval.runner.run_eval` (finished runs resume/skip), merge the
  reports with :mod:`xke.eval.report`, add the CLM-Bench Table 1/2 layout and,
  for every group of zh/en/mix runs with saved deltas, the geometry analysis.

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
from typing import Any, Iterable, Mapping, Sequence

from ..errors import ConfigError, DataError

DELTAS_FILE = "deltas.safetensors"
DELTAS_META = "deltas.json"
#: run metadata that must agree between the zh, en and mix runs compared by analyze deltas
SAME_KEYS = ("method", "model", "bench", "data", "config", "template", "protocol", "batch_size", "limit", "seed",
             "split", "n_cases", "n", "n_batches")


# =============================================================== deltas of runs
def run_meta(run_dir: str | Path) -> dict[str, Any]:
    """What a run says about itself: ``spec.json``, ``metrics.json`` then ``deltas.json`` merged
    (later files win)."""
    d = Path(run_dir)
    meta: dict[str, Any] = {}
    for name in ("spec.json", "metrics.json", DELTAS_META):
        p = d / name
        if p.exists():
            try:
                data = json.loads(p.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise DataError(f"{p}: invalid JSON: {e}") from e
            if isinstance(data, dict):
                meta.update({k: v for k, v in data.items() if not isinstance(v, dict)})
    return meta


def load_run_deltas(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(deltas by parameter name, run metadata)`` of one ``xke eval --save-deltas`` run."""
    d = Path(run_dir)
    if not d.is_dir():
        raise DataError(f"{d}: no such run directory")
    f = d / DELTAS_FILE
    if not f.exists():
        raise DataError(f"{d} has no {DELTAS_FILE}; run `xke eval ... --save-deltas --out {d}` "
                        "with a weight-editing method first")
    from safetensors.torch import load_file
    try:
        deltas = load_file(str(f))
    except Exception as e:  # safetensors raises its own error types
        raise DataError(f"{f}: cannot read safetensors file: {e}") from e
    return deltas, run_meta(d)


def _norm(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def check_same_protocol(metas: Mapping[str, Mapping[str, Any]], dirs: Mapping[str, Any] | None = None) -> None:
    """Clear error when the zh/en/mix runs differ in protocol, batch size, method, data, …, or when a
    run's recorded edit language is not the one it is passed as."""
    problems = []
    for role, m in metas.items():
        el = m.get("edit_lang")
        if el is not None and str(el) != role:
            where = f" ({dirs[role]})" if dirs else ""
            problems.append(f"the --{role} run{where} edited in {el!r}, not {role!r}")
    for key in SAME_KEYS:
        vals = {role: _norm(m.get(key)) for role, m in metas.items() if m.get(key) is not None}
        if len(vals) == len(metas) and len(set(map(repr, vals.values()))) > 1:
            problems.append(f"{key} differs: " + ", ".join(f"{r}={v!r}" for r, v in vals.items()))
    if problems:
        raise DataError("the zh, en and mix runs must edit the same facts with the same protocol and batch "
                        "size: " + "; ".join(problems))


def analyze_deltas(zh: str | Path, en: str | Path, mix: str | Path, out: str | Path, *, layer: str | None = None,
                   top_p: float = 5.0, k: int = 10, plot: bool = True, label: str | None = None) -> dict[str, Any]:
    """Write ``out/geometry.json`` (+ ``geometry.png``, ``geometry_inputs.json``); return the geometry."""
    from .geometry import geometry_report
    dirs = {"zh": Path(zh), "en": Path(en), "mix": Path(mix)}
    loaded = {role: load_run_deltas(d) for role, d in dirs.items()}
    metas = {role: m for role, (_, m) in loaded.items()}
    check_same_protocol(metas, dirs)
    geom = geometry_report(loaded["zh"][0], loaded["en"][0], loaded["mix"][0], top_p=top_p, k=k, layer=layer)
    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    (o / "geometry.json").write_text(json.dumps(geom, indent=2) + "\n", encoding="utf-8")
    info = {"inputs": {r: str(d) for r, d in dirs.items()},
            "protocol": metas["zh"].get("protocol"), "batch_size": metas["zh"].get("batch_size"),
            "method": metas["zh"].get("method"), "top_p": top_p, "k": k, "layer": layer,
            "definitions": {
                "independence": "pair (Δzh, Δen)", "additivity": "pair (Δmix, Δzh + Δen)",
                "cosine": "cosine of the flattened matrices",
                "jaccard": f"Jaccard of the top-{top_p}% neurons by absolute change; neuron = output row "
                           "of the weight (a column for GPT-2 Conv1D); change = L1 norm of the row",
                "principal_angle_deg": f"mean principal angle (degrees) between the top-{k} left singular "
                                       "subspaces (directions with σ < 1e-3·σmax dropped)",
                "relative_error": "‖a − b‖/‖a‖ with a = Δzh (independence) or Δmix (additivity)"}}
    (o / "geometry_inputs.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if plot:
        from .plots import plot_geometry
        bs = metas["zh"].get("batch_size")
        title = label or (f"{metas['zh'].get('method', '')} batch {bs}".strip() if bs is not None else None)
        plot_geometry(geom, o / "geometry.png", title=title, xlabel="matrix")
    return geom


def default_matrix(names: Sequence[str]) -> str:
    """The deepest edited matrix (largest layer number in the name; last name otherwise)."""
    def key(n: str):
        nums = [int(x) for x in re.findall(r"\.(\d+)\.", n)]
        return (nums[-1] if nums else -1, n)
    return max(names, key=key)


def figure1(by_label: Mapping[str, Mapping[str, Any]], out_png: str | Path, *, layer: str | None = None,
            title: str | None = None) -> tuple[str, dict[str, Any]]:
    """Figure-1 bars across runs (e.g. batch sizes) for one matrix (``layer`` or the deepest one)."""
    from .plots import plot_geometry
    first = next(iter(by_label.values()))
    name = layer or default_matrix(list(first))
    data = {}
    for lb, geom in by_label.items():
        if name not in geom:
            raise DataError(f"matrix {name!r} missing from run {lb}; available: {list(geom)}")
        data[lb] = geom[name]
    plot_geometry(data, out_png, title=title or name, xlabel="batch size")
    return name, data


# =============================================================== experiment grids
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
    from ..eval.runner import EvalSpec
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
    from ..eval.report import load_run, render_clm

    done = [(name, load_run(d)) for name, d in runs if (Path(d) / "metrics.json").exists()]
    ms = [dict(m, model=_short_model(m.get("model"))) for _, m in done]
    return render_clm(ms, [str(m.get("method", "")) for m in ms], batch=True, names=[n for n, _ in done])


def geometry_table(rows: Iterable[tuple[str, str, Mapping[str, Any]]]) -> str:
    """Markdown table: run group, matrix, the four metrics for both pairs."""
    lines = ["| Runs | Matrix | cos zh·en | Jaccard zh·en | angle zh·en (°) | rel. err zh·en | "
             "cos mix·(zh+en) | Jaccard mix·(zh+en) | angle mix·(zh+en) (°) | rel. err mix·(zh+en) |",
             "|" + "---|" * 10]

    def f(v: Any, angle: bool = False) -> str:
        return "–" if v is None else (f"{v:.1f}" if angle else f"{v:.3f}")
    for label, name, g in rows:
        i, a = g["independence"], g["additivity"]
        lines.append(f"| {label} | {name} | {f(i['cosine'])} | {f(i['jaccard'])} | "
                     f"{f(i['principal_angle_deg'], True)} | {f(i['relative_error'])} | {f(a['cosine'])} | "
                     f"{f(a['jaccard'])} | {f(a['principal_angle_deg'], True)} | {f(a['relative_error'])} |")
    return "\n".join(lines) + "\n"


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
    from ..eval.runner import run_eval
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
    from ..eval.report import merge_runs
    dirs = [d for d in run_dirs if (Path(d) / "metrics.json").exists()]
    if not dirs:
        return ""
    md, _ = merge_runs(dirs, out=root / "merged")
    return "## Merged evaluation report (root/merged)\n\n" + md.split("\n", 1)[-1]
