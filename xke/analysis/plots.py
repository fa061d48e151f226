"""Plots of the analyses (matplotlib, Agg backend: no display needed).

* :func:`plot_geometry` — CLM-Bench Figure 1 layout: a 2 × 4 grid of bar
  charts, top row the independence pair (Δzh vs Δen, blue), bottom row the
  additivity pair (Δmix vs Δzh + Δen, orange), one column per metric, one bar
  per run label (batch size) or matrix name.
* :func:`plot_layer_metrics` — Appendix B Figure 5 style: per-layer delta
  cosine, projection difference and separation, pair cosine, raw projections.
* :func:`plot_layer_embeddings` — Appendix B Figure 6 style: PCA and t-SNE of
  the two languages' hidden states, one column per layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from .geometry import METRICS

METRIC_TITLES = {
    "cosine": "Cosine similarity",
    "jaccard": "Neuron overlap (Jaccard, top-p%)",
    "principal_angle_deg": "Subspace angle (deg)",
    "relative_error": "Relative error",
}
PAIR_TITLES = {"independence": "Δzh vs Δen (independence)", "additivity": "Δmix vs Δzh+Δen (additivity)"}
PAIR_COLORS = {"independence": "#1f77b4", "additivity": "#ff7f0e"}
LANG_COLORS = {"zh": "#1f77b4", "en": "#d62728"}


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def plot_geometry(by_label: Mapping[str, Mapping[str, Mapping[str, float | None]]], path: str | Path, *,
                  title: str | None = None, xlabel: str = "") -> Path:
    """Bar charts of ``{label: {"independence": {metric: v}, "additivity": {...}}}`` into ``path`` (PNG)."""
    plt = _plt()
    labels = list(by_label)
    fig, axes = plt.subplots(2, len(METRICS), figsize=(3.3 * len(METRICS), 6.0), squeeze=False)
    for row, pair in enumerate(("independence", "additivity")):
        for col, metric in enumerate(METRICS):
            ax = axes[row][col]
            vals = [by_label[lb][pair].get(metric) for lb in labels]
            ys = [v if v is not None else 0.0 for v in vals]
            bars = ax.bar(range(len(labels)), ys, color=PAIR_COLORS[pair])
            for b, v in zip(bars, vals):
                txt = "n/a" if v is None else (f"{v:.1f}" if metric == "principal_angle_deg" else f"{v:.3f}")
                ax.annotate(txt, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom",
                            fontsize=7)
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels([_short(lb) for lb in labels], rotation=30 if len(labels) > 3 else 0, fontsize=7)
            if metric == "principal_angle_deg":
                ax.set_ylim(0, 100)
            elif metric in ("cosine", "jaccard"):
                ax.set_ylim(min(0.0, min(ys, default=0.0)) * 1.1, 1.1)
            if row == 0:
                ax.set_title(METRIC_TITLES[metric], fontsize=9)
            if col == 0:
                ax.set_ylabel(PAIR_TITLES[pair], fontsize=8)
            if row == 1 and xlabel:
                ax.set_xlabel(xlabel, fontsize=8)
    return _save(fig, path, title)


def _save(fig, path: str | Path, title: str | None = None) -> Path:
    """Add the title, lay out, write the PNG (creating its folder) and close the figure."""
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    _plt().close(fig)
    return path


def _short(label: str, n: int = 28) -> str:
    return label if len(label) <= n else "…" + label[-(n - 1):]


def plot_layer_metrics(rows: Sequence[Mapping[str, float]], path: str | Path, *, langs: tuple[str, str] = ("zh", "en"),
                       suggested: int | None = None, title: str | None = None) -> Path:
    """Four panels over layers: delta cosine, projection difference + separation, pair cosine,
    raw projections of each language on the language vector."""
    plt = _plt()
    a, b = langs
    layers = [r["layer"] for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.5))
    ax = axes[0][0]
    ax.plot(layers, [r["delta_cosine"] for r in rows], marker="o")
    ax.set_title("Delta cosine (pair difference vs language vector)", fontsize=9)
    ax = axes[0][1]
    ax.plot(layers, [r["projection_difference"] for r in rows], marker="o", label="projection difference")
    ax2 = ax.twinx()
    ax2.plot(layers, [r["separation"] for r in rows], marker="s", color="#2ca02c", label="separation (d')")
    ax.set_title("Language projection difference / separation", fontsize=9)
    ax.legend(loc="upper left", fontsize=7)
    ax2.legend(loc="lower right", fontsize=7)
    ax = axes[1][0]
    ax.plot(layers, [r["pair_cosine"] for r in rows], marker="o", color="#9467bd")
    ax.set_title(f"Cosine of parallel {a}/{b} hidden states", fontsize=9)
    ax = axes[1][1]
    ax.plot(layers, [r[f"projection_{a}"] for r in rows], marker="o", color=LANG_COLORS.get(a), label=a)
    ax.plot(layers, [r[f"projection_{b}"] for r in rows], marker="o", color=LANG_COLORS.get(b), label=b)
    ax.set_title("Mean projection on the language vector", fontsize=9)
    ax.legend(fontsize=7)
    from matplotlib.ticker import MaxNLocator
    for row in axes:
        for x in row:
            x.set_xlabel("layer", fontsize=8)
            x.xaxis.set_major_locator(MaxNLocator(integer=True))
            if suggested is not None:
                x.axvline(suggested, color="grey", ls="--", lw=0.8)
    return _save(fig, path, title)


def plot_layer_embeddings(points: Mapping[int, Mapping[str, "object"]], path: str | Path, *,
                          langs: tuple[str, str] = ("zh", "en"), title: str | None = None) -> Path:
    """``points[layer] = {"pca": array [2N, 2], "tsne": array [2N, 2] or None, "lang": list of codes}``;
    one column per layer, rows PCA and t-SNE."""
    plt = _plt()
    layers = list(points)
    kinds = ["pca"] + (["tsne"] if any(points[lay].get("tsne") is not None for lay in layers) else [])
    fig, axes = plt.subplots(len(kinds), len(layers), figsize=(3.0 * len(layers), 3.0 * len(kinds)), squeeze=False)
    for c, lay in enumerate(layers):
        lang = list(points[lay]["lang"])
        for r, kind in enumerate(kinds):
            ax = axes[r][c]
            xy = points[lay].get(kind)
            if xy is None:
                ax.axis("off")
                continue
            for code in langs:
                idx = [i for i, x in enumerate(lang) if x == code]
                ax.scatter(xy[idx, 0], xy[idx, 1], s=6, alpha=0.6, color=LANG_COLORS.get(code), label=code)
            ax.set_title(f"layer {lay} · {kind.upper()}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and c == 0:
                ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
