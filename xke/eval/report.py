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
    if not f.is_file():
        raise XkeError(f"{p}: no metrics.json (is it an xke eval output directory, and did the run finish?)")
    m = _read_json_object(f)
    _check_metrics(m, f)
    spec_f = f.parent / "spec.json"
    m["_dir"] = str(f.parent)
    m["_spec"] = _read_json_object(spec_f) if spec_f.is_file() else {}
    return m


def _read_json_object(f: Path) -> dict[str, Any]:
    from ..errors import DataError

    try:
        m = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"invalid JSON ({e})", path=str(f)) from None
    except RecursionError:
        raise DataError("invalid JSON (nested too deeply)", path=str(f)) from None
    if not isinstance(m, dict):
        raise DataError(f"expected a JSON object, got {type(m).__name__}", path=str(f))
    return m


def _check_metrics(m: dict[str, Any], f: Path) -> None:
    """Refuse a ``metrics.json`` whose shape the report cannot read, naming the field."""
    from ..errors import DataError

    for k in ("method", "edit_lang", "by_test_lang"):
        if k not in m:
            raise DataError("not an xke metrics.json (missing field)", path=str(f), field=k)
    for k in ("method", "edit_lang"):
        if not isinstance(m[k], str):
            raise DataError(f"expected a string, got {m[k]!r:.40}", path=str(f), field=k)
    if not isinstance(m["by_test_lang"], dict):
        raise DataError("expected an object keyed by test language", path=str(f), field="by_test_lang")
    for lang, block in m["by_test_lang"].items():
        if not isinstance(block, dict):
            raise DataError("expected an object keyed by query kind", path=str(f), field=f"by_test_lang.{lang}")
        for kind, vals in block.items():
            where = f"by_test_lang.{lang}.{kind}"
            if not isinstance(vals, dict):
                raise DataError("expected an object of metrics", path=str(f), field=where)
            for key, v in vals.items():
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    raise DataError(f"expected a number or null, got {v!r:.40}", path=str(f), field=f"{where}.{key}")
    for k in ("avg", "n_cases"):
        v = m.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise DataError(f"expected a number or null, got {v!r:.40}", path=str(f), field=k)
    for k in ("clm", "after_each", "test_langs"):
        v = m.get(k)
        if v is not None and not isinstance(v, (dict, list)):
            raise DataError(f"expected an object or list, got {v!r:.40}", path=str(f), field=k)


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


def merge_runs(dirs: Sequence[str | Path], out: str | Path | None = None, *, layout: str = "table1",
               metric: str = "tf_acc", labels: Sequence[str] | None = None) -> tuple[str, list[Path]]:
    """Merge finished runs into one report in ``layout`` (:data:`LAYOUTS`); returns the markdown and the files
    written (if ``out``)."""
    if not dirs:
        raise XkeError("no run directories given")
    seen: dict[Path, str] = {}
    for d in dirs:
        p = Path(d).expanduser()
        key = (p if p.is_dir() else p.parent).resolve()
        if key in seen:
            raise XkeError(f"run {d} is given twice (also as {seen[key]}); each run is one row")
        seen[key] = str(d)
    o = None
    if out is not None:
        o = Path(out).expanduser()
        if o.exists() and not o.is_dir():
            raise XkeError(f"--out {out} is a file, not a folder; give a folder path")
        if o.exists() and o.resolve() in seen:
            raise XkeError(f"--out {out} is one of the runs being merged; writing there would replace that run's "
                           "report.md and heatmap.png. Give another folder")
    runs = [load_run(d) for d in dirs]
    if layout == "table1" and labels is None:
        md = render_report(runs, title="xke evaluation (merged)")
    else:
        md = render_layout(runs, layout, metric=metric, labels=labels)
    written: list[Path] = []
    if o is not None:
        from ..fsutil import prepare_out_dir

        prepare_out_dir(o)
        (o / "report.md").write_text(md, encoding="utf-8")
        written.append(o / "report.md")
        merged = [{k: v for k, v in m.items() if k != "_spec"} for m in runs]
        (o / "runs.json").write_text(json.dumps(merged, indent=2, ensure_ascii=False), encoding="utf-8")
        written.append(o / "runs.json")
        written.append(write_heatmap(runs, o / "heatmap.png"))
    return md, written


# ------------------------------------------------------------------------------- paper layouts
#: ``xke report --layout NAME``: what each layout reproduces
LAYOUTS = {
    "table1": "X-KDE Table 1: per edit language, rows = methods, test language x R/G/L/P, Avg.",
    "table2": "X-KDE Table 2 (MzsRE): one block per metric, columns edit-test (en-en ... en-zh), per-metric "
              "en-avg over the test languages",
    "table4": "X-KDE Table 4 (stage ablation): rows = runs, one average per edit language (en-avg, zh-avg)",
    "table5": "X-KDE Table 5 (data ablation): rows = runs, R. G. L. P. for each edit-test pair",
    "table6": "X-KDE Table 6 (preference optimisation): rows = runs, Eff. Gen. Loc. Por. Avg. per edit-test pair",
    "clm1": "CLM-Bench Table 1: zh/en score, zh and en R/G/L, trans per method and editing language",
    "clm2": "CLM-Bench Table 2: Table 1 with the batch size",
}
SHORT = {"reliability": "R.", "generality": "G.", "locality": "L.", "portability": "P."}
TABLE6 = {"reliability": "Eff.", "generality": "Gen.", "locality": "Loc.", "portability": "Por."}


def metric_value(m: dict[str, Any], lang: str, kind: str, key: str) -> float | None:
    """A run's figure for ``(test lang, kind)`` under table metric ``key`` (locality: ``key`` or its
    dataset-answer form ``loc_*``)."""
    block = (m["by_test_lang"].get(lang) or {}).get(kind) or {}
    v = block.get(key)
    if v is None and kind == "locality" and key in DATASET_LOCALITY:
        v = block.get(DATASET_LOCALITY[key])
    return v


def _groups(runs: Sequence[dict[str, Any]], labels: Sequence[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """Runs merged by (label, edit language): ``(label, edit_lang, by_test_lang)``, in first-seen order.
    Several runs of one method (e.g. one per test language) fill one row; a test language measured twice
    for the same row is an error."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for m, lb in zip(runs, labels):
        k = (lb, m["edit_lang"])
        merged = out.setdefault(k, {})
        for lang, block in m["by_test_lang"].items():
            if lang in merged and block:
                raise XkeError(f"{m.get('_dir', 'a run')}: test language {lang!r} of {lb!r} (edit {k[1]}) is "
                               "already given by another run; name the rows apart with --labels")
            if block:
                merged[lang] = block
    return [(lb, el, b) for (lb, el), b in out.items()]


def _kinds_of(groups, key) -> list[str]:
    return [k for k in QUERY_KINDS if any(metric_value({"by_test_lang": b}, lang, k, key) is not None
                                          for _, _, b in groups for lang in b)]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def render_table2(runs, labels, key: str = "tf_acc") -> str:
    """X-KDE Table 2: per edit language, one block per metric (rows = methods), columns ``edit-test`` for every
    test language (MzsRE order) and ``edit-avg`` = mean over those test languages of that metric."""
    from ..data.languages import MZSRE_LANGUAGES

    groups = _groups(runs, labels)
    lines = [f"### {METRIC_TITLES[key][0].upper() + METRIC_TITLES[key][1:]}, X-KDE Table 2 layout", ""]
    for el in dict.fromkeys(g[1] for g in groups):
        gs = [g for g in groups if g[1] == el]
        langs = sorted({lang for _, _, b in gs for lang in b},
                       key=lambda x: (MZSRE_LANGUAGES.index(x) if x in MZSRE_LANGUAGES else 99, x))
        header = ["Metrics", "Methods"] + [f"{el}-{t}" for t in langs] + [f"{el}-avg"]
        rows = []
        for kind in _kinds_of(gs, key):
            for i, (lb, _, b) in enumerate(gs):
                vals = [metric_value({"by_test_lang": b}, t, kind, key) for t in langs]
                avg = _mean(vals)
                rows.append([KIND_TITLES[kind] if i == 0 else "", lb] + [_fmt(v) for v in vals]
                            + [_fmt(None if avg is None else round(avg, 2))])
        lines += _table(header, rows) + [""]
    return "\n".join(lines)


def render_table4(runs, labels, key: str = "tf_acc") -> str:
    """X-KDE Table 4: one row per run label, one column per edit language: the mean of all its figures
    (every test language and metric, as Table 1's Avg.)."""
    groups = _groups(runs, labels)
    els = list(dict.fromkeys(g[1] for g in groups))
    rows = []
    for lb in dict.fromkeys(g[0] for g in groups):
        cells = []
        for el in els:
            b = next((b for l2, e2, b in groups if l2 == lb and e2 == el), None)
            vals = [] if b is None else [metric_value({"by_test_lang": b}, t, k, key) for t in b for k in QUERY_KINDS]
            avg = _mean(vals)
            cells.append(_fmt(None if avg is None else round(avg, 2)))
        rows.append([lb] + cells)
    return "\n".join([f"### X-KDE Table 4 layout ({key}, %)", ""] + _table(["Methods"] + [f"{e}-avg" for e in els],
                                                                             rows) + [""])


def _pair_table(runs, labels, key, short, with_avg: bool, title: str) -> str:
    groups = _groups(runs, labels)
    pairs = list(dict.fromkeys((el, t) for _, el, b in groups for t in b))
    kinds = _kinds_of(groups, key)
    header = ["Methods"] + [f"{el}-{t} {short[k]}" for el, t in pairs for k in kinds] + (["Avg."] if with_avg else [])
    rows = []
    for lb in dict.fromkeys(g[0] for g in groups):
        vals = []
        for el, t in pairs:
            b = next((b for l2, e2, b in groups if l2 == lb and e2 == el), {})
            vals += [metric_value({"by_test_lang": b}, t, k, key) for k in kinds]
        avg = _mean(vals)
        rows.append([lb] + [_fmt(v) for v in vals] + ([_fmt(None if avg is None else round(avg, 2))] if with_avg
                                                       else []))
    return "\n".join([f"### {title} ({key}, %)", ""] + _table(header, rows) + [""])


def render_clm(runs, labels, key: str = "tf_acc", batch: bool = False, names: Sequence[str] | None = None) -> str:
    """CLM-Bench Tables 1-2: per run, zh_score, en_score, zh and en R/G/L and trans (percent); ``names``
    adds a first column naming each run."""
    from .metrics import clm_scores

    header = (["Run"] if names is not None else []) + ["Model"] + (["Batch size"] if batch else [])
    header += ["Methods", "Editing Language", "zh score", "en score"]
    header += [f"{lang} {KIND_TITLES[k]}" for lang in ("zh", "en") for k in ("reliability", "generality", "locality")]
    header += ["trans"]
    rows = []
    for i, (m, lb) in enumerate(zip(runs, labels)):
        by = {lang: {k: metric_value(m, lang, k, key) for k in ("reliability", "generality", "locality")}
              for lang in ("zh", "en") if lang in m["by_test_lang"]}
        s = clm_scores(by, m["edit_lang"])
        trans = None if s["trans"] is None else round(100 * s["trans"], 2)
        lang_name = {"zh": "Chinese", "en": "English"}.get(m["edit_lang"], m["edit_lang"])
        row = ([names[i]] if names is not None else []) + [str(m.get("model"))]
        row += ([str(m.get("batch_size"))] if batch else []) + [lb, lang_name]
        row += [_fmt(None if s[f"{x}_score"] is None else round(s[f"{x}_score"], 2)) for x in ("zh", "en")]
        row += [_fmt(by.get(lang, {}).get(k)) for lang in ("zh", "en") for k in ("reliability", "generality", "locality")]
        rows.append(row + [_fmt(trans)])
    return "\n".join([f"### CLM-Bench Table {'2' if batch else '1'} layout ({key}, %)", ""] + _table(header, rows)
                     + [""])


def render_layout(runs: Sequence[dict[str, Any]], layout: str = "table1", *, metric: str = "tf_acc",
                  labels: Sequence[str] | None = None) -> str:
    """Markdown of ``runs`` in paper layout ``layout`` (see :data:`LAYOUTS`); ``labels`` name the rows (one per
    run; default: the method, with what tells runs apart)."""
    if layout not in LAYOUTS:
        raise XkeError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if metric not in METRIC_TITLES:
        raise XkeError(f"unknown metric {metric!r}; use one of {', '.join(METRIC_TITLES)}")
    if labels is not None and len(labels) != len(runs):
        raise XkeError(f"--labels gives {len(labels)} names for {len(runs)} runs")
    if layout == "table1":
        named = [dict(m, method=lb) for m, lb in zip(runs, labels)] if labels is not None else runs
        return render_report(named, title="xke evaluation (merged)")
    labels = list(labels) if labels is not None else _row_labels(runs)
    body = {"table2": lambda: render_table2(runs, labels, metric),
            "table4": lambda: render_table4(runs, labels, metric),
            "table5": lambda: _pair_table(runs, labels, metric, SHORT, False, "X-KDE Table 5 layout"),
            "table6": lambda: _pair_table(runs, labels, metric, TABLE6, True, "X-KDE Table 6 layout"),
            "clm1": lambda: render_clm(runs, labels, metric),
            "clm2": lambda: render_clm(runs, labels, metric, batch=True)}[layout]()
    return "\n".join([f"# xke evaluation: {LAYOUTS[layout]}", "", _describe(runs), _profiles_line(runs), "", body])
