"""Metrics aggregation and reports: ``metrics.json``, ``report.md``, ``heatmap.png``, merged runs.

- :func:`aggregate` turns per-case results (``cases.jsonl``) into the
  ``metrics.json`` dict: per test language and query kind, the mean over
  cases of each case's mean over its queries (a case with three paraphrases
  counts once in generality), in percent with two decimals. ``avg`` is the
  mean of the reported ``tf_acc`` figures; ``clm`` (when zh and en are both
  tested) holds CLM-Bench's ``zh_score``/``en_score`` (mean of reliability,
  generality, locality tf_acc) and ``trans`` in percent.
- :func:`render_tables` lays runs out as Table 1 of the X-KDE paper: one
  section per edit language, rows = methods, columns = test language ×
  Reliability/Generality/Locality/Portability, then Avg; one table for
  teacher-forced accuracy and one for F1.
- :func:`write_heatmap`: edit language × test language reliability (tf_acc),
  one panel per method.
- :func:`merge_runs` (``xke report DIR1 DIR2 ...``): all of the above over many runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..data.languages import LANGUAGE_NAMES
from ..data.schema import QUERY_KINDS
from ..errors import XkeError

KIND_TITLES = {"reliability": "Reliability", "generality": "Generality", "locality": "Locality",
               "portability": "Portability"}
#: every per-query metric, in table order (definitions: :data:`xke.eval.profiles.METRIC_DEFINITIONS`)
METRIC_KEYS = ("tf_acc", "f1", "em", "tf_f1", "tf_em", "loc_acc", "loc_f1", "loc_em")
#: a table's metric -> the key its Locality column reads when locality is forced on the dataset's loc_ans
DATASET_LOCALITY = {"tf_acc": "loc_acc", "tf_f1": "loc_f1", "tf_em": "loc_em"}
METRIC_TITLES = {"tf_acc": "teacher-forced token accuracy (%)", "f1": "token F1 of generated answers (%)",
                 "em": "exact match of generated answers (%)",
                 "tf_f1": "token F1 of the decoded teacher-forced argmax (%)",
                 "tf_em": "exact match of the decoded teacher-forced argmax (%)"}


def _mean(xs: Iterable[float | None]) -> float | None:
    from .metrics import mean
    return mean(xs)


def _pct(x: float | None) -> float | None:
    from .metrics import to_percent
    return to_percent(x)


def aggregate(records: Sequence[dict[str, Any]], spec) -> dict[str, Any]:
    """The ``metrics.json`` dict from per-case result records (``{"case_id", "queries": [...]}``)."""
    test_langs = list(spec.test_langs)
    by_lang: dict[str, dict[str, dict[str, float | None]]] = {}
    for lang in test_langs:
        block: dict[str, dict[str, float | None]] = {}
        for kind in QUERY_KINDS:
            per_case: dict[str, list[float | None]] = {k: [] for k in METRIC_KEYS}
            present: set[str] = set()
            for rec in records:
                qs = [q for q in rec["queries"] if q["lang"] == lang and q["kind"] == kind]
                if not qs:
                    continue
                present |= {k for q in qs for k in q if k in per_case}
                for k in METRIC_KEYS:
                    per_case[k].append(_mean(q.get(k) for q in qs))
            if present:
                block[kind] = {k: _pct(_mean(per_case[k])) for k in METRIC_KEYS if k in present}
        by_lang[lang] = block
    # avg: the teacher-forced accuracy figures (locality: loc_acc where the profile forces the dataset's answer)
    tf = [v.get("tf_acc", v.get("loc_acc")) for b in by_lang.values() for v in b.values()]
    avg = _mean(tf)
    from .profiles import METRIC_DEFINITIONS
    used = [k for k in METRIC_KEYS if any(k in v for b in by_lang.values() for v in b.values())]
    metrics: dict[str, Any] = {
        "profile": getattr(spec, "profile", "xke"), "system_prompt": getattr(spec, "system_prompt", None),
        "metric_definitions": {k: METRIC_DEFINITIONS[k] for k in used},
        "method": spec.method, "model": spec.model, "bench": spec.bench, "edit_lang": spec.edit_lang,
        "test_langs": test_langs, "protocol": spec.protocol, "batch_size": spec.batch_size,
        "n_cases": len(records), "by_test_lang": by_lang,
        # locality questions about a fact another edit in force changes are not locality: left out
        "n_locality_skipped": sum(1 for r in records if r.get("locality_skipped")),
        "avg": None if avg is None else round(avg, 2),
    }
    if "zh" in by_lang and "en" in by_lang:
        metrics["clm"] = clm_block(by_lang, spec.edit_lang)
    return metrics


def clm_block(by_lang: dict[str, Any], edit_lang: str) -> dict[str, float | None]:
    """CLM-Bench scores (percent) from a ``by_test_lang`` block (tf_acc figures)."""
    from .metrics import clm_scores

    tf = {lang: {kind: {"tf_acc": v.get("tf_acc", v.get("loc_acc"))} for kind, v in by_lang[lang].items()}
          for lang in ("zh", "en")}
    s = clm_scores(tf, edit_lang, key="tf_acc")

    def r2(x):
        return None if x is None else round(float(x), 2)

    return {"zh_score": r2(s.get("zh_score")), "en_score": r2(s.get("en_score")),
            "trans": _pct(s.get("trans")) if s.get("trans") is not None else None}


# ------------------------------------------------------------------------------- loading runs
def load_run(path: str | Path) -> dict[str, Any]:
    """``metrics.json`` of a run directory (or the file itself), with ``_dir`` and ``_spec`` added."""
    p = Path(path).expanduser()
    f = p / "metrics.json" if p.is_dir() else p
    if not f.exists():
        raise XkeError(f"{p}: no metrics.json (is it an xke eval output directory, and did the run finish?)")
    try:
        m = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise XkeError(f"{f}: invalid JSON ({e})") from e
    for k in ("method", "edit_lang", "by_test_lang"):
        if k not in m:
            raise XkeError(f"{f}: not an xke metrics.json (no {k!r})")
    spec_f = f.parent / "spec.json"
    m["_dir"] = str(f.parent)
    m["_spec"] = json.loads(spec_f.read_text(encoding="utf-8")) if spec_f.exists() else {}
    return m


def _lang_title(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code) if code != "mix" else "zh+en (mix)"


def _row_labels(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Method names, with what tells runs apart (mode, protocol/batch, model, bench) when needed."""
    def parts(m):
        sp = m.get("_spec", {})
        return {"method": m["method"], "mode": sp.get("mode") if sp.get("mode") == "retrieve" else None,
                "protocol": f"{m.get('protocol')}" + (f" x{m.get('batch_size')}" if m.get("protocol") != "single"
                                                      else ""),
                "model": m.get("model"), "bench": m.get("bench"), "profile": m.get("profile", "xke")}
    ps = [parts(m) for m in runs]
    labels = []
    for p in ps:
        extra = []
        if p["mode"]:
            extra.append("retrieve")
        for k in ("protocol", "model", "bench", "profile"):
            if len({q[k] for q in ps}) > 1:
                extra.append(str(p[k]))
        labels.append(p["method"] + (f" ({', '.join(extra)})" if extra else ""))
    return labels


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def table_columns(runs: Sequence[dict[str, Any]], key: str) -> list[tuple[str, str, str, str]]:
    """The columns of table ``key`` over ``runs``: ``(test_lang, kind, metric_key, header)``.

    The Locality column reads ``key`` (locality against the model's own pre-edit answer) or its
    dataset-answer form (``loc_acc``, ...; header ``Locality (loc_ans)``); runs with both get both columns."""
    langs: list[str] = []
    for m in runs:
        for lang in m.get("test_langs") or list(m["by_test_lang"]):
            if lang not in langs:
                langs.append(lang)
    cols = []
    for lang in langs:
        for kind in QUERY_KINDS:
            keys = [key] + ([DATASET_LOCALITY[key]] if kind == "locality" and key in DATASET_LOCALITY else [])
            for k in keys:
                if any(k in (m["by_test_lang"].get(lang, {}).get(kind) or {}) for m in runs):
                    head = f"{lang} {KIND_TITLES[kind]}" + (" (loc_ans)" if k != key else "")
                    cols.append((lang, kind, k, head))
    return cols


def present_metrics(runs: Sequence[dict[str, Any]]) -> list[str]:
    """The table metrics (``tf_acc``, ``f1``, ``tf_f1``, ...) some run reports."""
    have = {k for m in runs for b in m["by_test_lang"].values() for v in b.values() for k in v}
    out = []
    for key in METRIC_TITLES:
        if key in have or DATASET_LOCALITY.get(key) in have:
            out.append(key)
    return [k for k in out if k not in ("em", "tf_em")] or ["tf_acc"]


def render_tables(runs: Sequence[dict[str, Any]], metric_keys: Sequence[str] | None = None) -> str:
    """Markdown tables in the layout of X-KDE Table 1 (see module docstring); ``metric_keys`` default: the
    accuracy and F1 metrics the runs report."""
    metric_keys = present_metrics(runs) if metric_keys is None else metric_keys
    labels = _row_labels(runs)
    edit_langs: list[str] = []
    for m in runs:
        if m["edit_lang"] not in edit_langs:
            edit_langs.append(m["edit_lang"])
    lines: list[str] = []
    for key in metric_keys:
        cols = table_columns(runs, key)
        lines.append(f"### {METRIC_TITLES[key][0].upper() + METRIC_TITLES[key][1:]}")
        lines.append("")
        header = ["Method"] + [c[3] for c in cols] + ["Avg."]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for el in edit_langs:
            lines.append("| **Edit in " + _lang_title(el) + "**" + " |" * (len(header) - 1) + " |")
            for m, label in zip(runs, labels):
                if m["edit_lang"] != el:
                    continue
                vals = [(m["by_test_lang"].get(lang, {}).get(kind) or {}).get(k) for lang, kind, k, _ in cols]
                avg = m.get("avg") if key == "tf_acc" else _mean(vals)
                avg = None if avg is None else round(avg, 2)
                lines.append("| " + " | ".join([label] + [_fmt(v) for v in vals] + [_fmt(avg)]) + " |")
        lines.append("")
    clm_runs = [(m, label) for m, label in zip(runs, labels) if m.get("clm")]
    if clm_runs:
        lines.append("### CLM-Bench scores (tf_acc, %)")
        lines.append("")
        lines.append("| Method | Edit language | zh_score | en_score | trans |")
        lines.append("|---|---|---:|---:|---:|")
        for m, label in clm_runs:
            c = m["clm"]
            lines.append(f"| {label} | {m['edit_lang']} | {_fmt(c.get('zh_score'))} | {_fmt(c.get('en_score'))} | "
                         f"{_fmt(c.get('trans'))} |")
        lines.append("")
    return "\n".join(lines)


def _describe(runs: Sequence[dict[str, Any]]) -> str:
    ms = {(m.get("model"), m.get("bench")) for m in runs}
    n = {m.get("n_cases") for m in runs}
    txt = "; ".join(f"model `{a}`, bench `{b}`" for a, b in sorted(ms, key=str))
    return f"{txt}; cases per run: {', '.join(str(x) for x in sorted(n, key=str))}"


def _profiles_line(runs: Sequence[dict[str, Any]]) -> str:
    profs = sorted({str(m.get("profile", "xke")) for m in runs})
    return f"Evaluation profile: {', '.join(profs)} (docs/profiles.md)."


def render_report(runs: Sequence[dict[str, Any]], title: str = "xke evaluation") -> str:
    parts = [f"# {title}", "", _describe(runs), "",
             "Locality compares post-edit with pre-edit predictions of the same model (forcing its own pre-edit "
             "answer; `(loc_ans)`: forcing the dataset's answer). Avg. = mean of the row's figures.",
             _profiles_line(runs), "", render_tables(runs)]
    if any(m.get("after_each") for m in runs):
        parts.append("### Right after each edit (sequential, tf_acc %)\n")
        after = [dict(m, by_test_lang=m["after_each"]["by_test_lang"], avg=m["after_each"]["avg"], clm=None)
                 for m in runs if m.get("after_each")]
        parts.append(render_tables(after, ("tf_acc",)))
    return "\n".join(parts).rstrip() + "\n"


def write_heatmap(runs: Sequence[dict[str, Any]], path: str | Path, key: str = "tf_acc") -> Path:
    """Edit language × test language reliability, one panel per method (matplotlib, Agg)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = _row_labels(runs)
    methods: list[str] = []
    for lb in labels:
        if lb not in methods:
            methods.append(lb)
    edit_langs: list[str] = []
    test_langs: list[str] = []
    for m in runs:
        if m["edit_lang"] not in edit_langs:
            edit_langs.append(m["edit_lang"])
        for lang in m["by_test_lang"]:
            if lang not in test_langs:
                test_langs.append(lang)
    n = len(methods)
    fig, axes = plt.subplots(1, n, figsize=(1.2 + 0.7 * len(test_langs) * n + 1.0 * n, 1.4 + 0.6 * len(edit_langs)),
                             squeeze=False)
    for ax, meth in zip(axes[0], methods):
        grid = np.full((len(edit_langs), len(test_langs)), np.nan)
        for m, lb in zip(runs, labels):
            if lb != meth:
                continue
            for j, lang in enumerate(test_langs):
                v = m["by_test_lang"].get(lang, {}).get("reliability", {}).get(key)
                if v is not None:
                    grid[edit_langs.index(m["edit_lang"]), j] = v
        im = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(test_langs)), test_langs)
        ax.set_yticks(range(len(edit_langs)), edit_langs)
        ax.set_xlabel("test language")
        ax.set_ylabel("edit language")
        ax.set_title(meth, fontsize=9)
        for i in range(len(edit_langs)):
            for j in range(len(test_langs)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if grid[i, j] < 60 else "black")
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8, label=f"reliability {key} (%)")
    p = Path(path)
    fig.savefig(p, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return p


def write_run_report(out: str | Path, metrics: dict[str, Any]) -> None:
    """``report.md`` and ``heatmap.png`` of one run."""
    out = Path(out)
    spec_f = out / "spec.json"
    m = dict(metrics, _dir=str(out), _spec=json.loads(spec_f.read_text()) if spec_f.exists() else {})
    (out / "report.md").write_text(render_report([m]), encoding="utf-8")
    write_heatmap([m], out / "heatmap.png")


def merge_runs(dirs: Sequence[str | Path], out: str | Path | None = None) -> tuple[str, list[Path]]:
    """Merge finished runs into one report; returns the markdown and the files written (if ``out``)."""
    if not dirs:
        raise XkeError("no run directories given")
    runs = [load_run(d) for d in dirs]
    md = render_report(runs, title="xke evaluation (merged)")
    written: list[Path] = []
    if out is not None:
        o = Path(out).expanduser()
        o.mkdir(parents=True, exist_ok=True)
        (o / "report.md").write_text(md, encoding="utf-8")
        written.append(o / "report.md")
        merged = [{k: v for k, v in m.items() if k != "_spec"} for m in runs]
        (o / "runs.json").write_text(json.dumps(merged, indent=2, ensure_ascii=False), encoding="utf-8")
        written.append(o / "runs.json")
        written.append(write_heatmap(runs, o / "heatmap.png"))
    return md, written
