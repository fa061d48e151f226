"""Geometry of saved edit deltas (``xke analyze deltas``).

:func:`analyze_deltas` reads the ``deltas.safetensors`` of a zh, an en and a
mix ``xke eval --save-deltas`` run, checks they share protocol, batch size and
matrices, and writes ``geometry.json`` (:func:`xke.analysis.geometry.geometry_report`)
and the Figure-1 bar charts. The experiment grids that produce such runs are
:mod:`xke.eval.experiment`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import DataError

DELTAS_FILE = "deltas.safetensors"
DELTAS_META = "deltas.json"
#: run metadata that must agree between the zh, en and mix runs compared by analyze deltas
SAME_KEYS = ("method", "model", "bench", "data", "config", "template", "protocol", "batch_size", "limit", "seed",
             "split", "n_cases", "n", "n_batches")


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
