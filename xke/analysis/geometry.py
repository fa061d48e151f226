"""Geometry of edit deltas: are zh and en edits independent, is a mixed edit their sum?

CLM-Bench (§6.2, Figure 1, Appendix C) compares weight changes ("deltas") of
the same matrix after editing the same facts in Chinese (Δzh), in English
(Δen) and in both languages at once (Δmix), with four metrics. Each is a pure
function of two tensors here:

* :func:`cosine` — cosine similarity of the flattened matrices.
* :func:`jaccard` — Jaccard index of the top-p% *neurons* by absolute change.
  A **neuron** is one output unit of the MLP down-projection, i.e. one
  **output row** of an ``nn.Linear`` weight (shape ``[out, in]``). For GPT-2's
  ``Conv1D`` (weight stored ``[in, out]``) an output unit is a **column**;
  pass ``neuron_dim=1`` (:func:`neuron_dim_for` guesses it from the parameter
  name). A neuron's absolute change is the L1 norm of its row
  (sum of ``|Δ|`` over its incoming weights). The top set has
  ``max(1, ceil(p/100 · n_neurons))`` members; ties are broken by index.
* :func:`principal_angle_deg` — principal angles between the spans of the
  top-k left singular vectors (output space; k = 10 by default) of the two
  matrices, reported as their **mean in degrees** (0° = same subspace,
  90° = orthogonal subspaces). A delta of rank r < k (MEMIT with one edit is
  rank one) only has r meaningful singular directions: singular vectors whose
  singular value is below ``rank_rtol · σ_max`` are dropped, and the angles
  are taken over ``min(k_a, k_b)`` directions.
* :func:`relative_error` — ``‖a − b‖_F / ‖a‖_F`` where ``a`` is the
  reference. For the **additivity** pair the reference is Δmix and
  ``b = Δzh + Δen`` (the paper's definition). For the **independence** pair we
  use the same form with ``a = Δzh, b = Δen``: how badly the English delta
  approximates the Chinese one (0 = identical; √2 ≈ 1.414 for orthogonal
  deltas of equal norm; ≥ 1 whenever the deltas are orthogonal).

Undefined values (a zero matrix) are ``nan`` from the pure functions and
``null`` in ``geometry.json``.

:func:`geometry_report` applies all four to every matrix and returns the
``geometry.json`` mapping::

    {"<matrix name>": {"independence": {"cosine", "jaccard", "principal_angle_deg", "relative_error"},
                       "additivity":   {"cosine", "jaccard", "principal_angle_deg", "relative_error"}}}
"""

from __future__ import annotations

import math
import re
from typing import Mapping

import torch

from ..errors import DataError

METRICS: tuple[str, ...] = ("cosine", "jaccard", "principal_angle_deg", "relative_error")
PAIRS: tuple[str, ...] = ("independence", "additivity")

#: GPT-2 style ``Conv1D`` weights (``[in, out]``): output units are columns
_CONV1D_NAME = re.compile(r"(^|\.)(c_proj|c_fc|c_attn)\.weight$")


def neuron_dim_for(name: str) -> int:
    """Axis of a weight's output units: 1 for GPT-2 ``Conv1D`` parameters (``…c_proj.weight``,
    ``c_fc``, ``c_attn``), else 0 (``nn.Linear``: ``[out, in]``)."""
    return 1 if _CONV1D_NAME.search(name) else 0


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", torch.float64)


def _as_rows(t: torch.Tensor, neuron_dim: int = 0) -> torch.Tensor:
    """``t`` as a float64 matrix whose rows are neurons (output units)."""
    x = _f64(t)
    if x.dim() == 1:
        return x.unsqueeze(1)
    if x.dim() != 2:
        x = x.reshape(x.shape[0], -1) if neuron_dim == 0 else x.movedim(neuron_dim, 0).reshape(x.shape[neuron_dim], -1)
        return x
    return x.T if neuron_dim == 1 else x


def _check_same_shape(a: torch.Tensor, b: torch.Tensor) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of the flattened tensors (``nan`` if either is all zero)."""
    _check_same_shape(a, b)
    x, y = _f64(a).flatten(), _f64(b).flatten()
    nx, ny = torch.linalg.vector_norm(x), torch.linalg.vector_norm(y)
    if nx == 0 or ny == 0:
        return float("nan")
    return float(torch.dot(x, y) / (nx * ny))


def neuron_change(delta: torch.Tensor, neuron_dim: int = 0) -> torch.Tensor:
    """Absolute change per neuron: L1 norm of each output unit's incoming weights."""
    return _as_rows(delta, neuron_dim).abs().sum(dim=1)


def top_neurons(delta: torch.Tensor, p: float = 5.0, neuron_dim: int = 0) -> set[int]:
    """Indices of the top ``p`` percent neurons by absolute change (at least one; ties by index)."""
    if not 0 < p <= 100:
        raise ValueError(f"top-p must be in (0, 100], got {p}")
    scores = neuron_change(delta, neuron_dim)
    k = max(1, math.ceil(p / 100.0 * scores.numel()))
    order = torch.argsort(scores, descending=True, stable=True)
    return set(order[:k].tolist())


def jaccard(a: torch.Tensor, b: torch.Tensor, p: float = 5.0, neuron_dim: int = 0) -> float:
    """Jaccard index |A∩B| / |A∪B| of the top-p% neuron sets of ``a`` and ``b``."""
    _check_same_shape(a, b)
    sa, sb = top_neurons(a, p, neuron_dim), top_neurons(b, p, neuron_dim)
    return len(sa & sb) / len(sa | sb)


def top_left_singular(m: torch.Tensor, k: int = 10, neuron_dim: int = 0, rank_rtol: float = 1e-3) -> torch.Tensor:
    """Orthonormal basis (columns) of the span of the top-k left singular vectors of ``m`` (rows =
    neurons, so the vectors live in the output space), keeping only directions with
    ``σ ≥ rank_rtol · σ_max``. Empty (0 columns) for a zero matrix."""
    x = _as_rows(m, neuron_dim)
    u, s, _ = torch.linalg.svd(x, full_matrices=False)
    if s.numel() == 0 or s[0] == 0:
        return u[:, :0]
    keep = int((s >= rank_rtol * s[0]).sum())
    return u[:, :max(1, min(k, keep))]


def principal_angles(a: torch.Tensor, b: torch.Tensor, k: int = 10, neuron_dim: int = 0,
                     rank_rtol: float = 1e-3) -> torch.Tensor:
    """Principal angles (radians, ascending) between the top-k left singular subspaces of ``a``
    and ``b``: ``arccos`` of the singular values of ``U_aᵀ U_b``."""
    _check_same_shape(a, b)
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    ua = top_left_singular(a, k, neuron_dim, rank_rtol)
    ub = top_left_singular(b, k, neuron_dim, rank_rtol)
    if ua.shape[1] == 0 or ub.shape[1] == 0:
        return torch.empty(0, dtype=torch.float64)
    cos = torch.linalg.svdvals(ua.T @ ub).clamp(-1.0, 1.0)
    return torch.sort(torch.arccos(cos)).values


def principal_angle_deg(a: torch.Tensor, b: torch.Tensor, k: int = 10, neuron_dim: int = 0,
                        rank_rtol: float = 1e-3) -> float:
    """Mean principal angle in degrees between the top-k left singular subspaces (``nan`` if either
    matrix is zero)."""
    ang = principal_angles(a, b, k, neuron_dim, rank_rtol)
    if ang.numel() == 0:
        return float("nan")
    return float(torch.rad2deg(ang).mean())


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``‖a − b‖_F / ‖a‖_F`` (``a`` is the reference; ``nan`` if ``a`` is zero)."""
    _check_same_shape(a, b)
    x, y = _f64(a), _f64(b)
    na = torch.linalg.vector_norm(x)
    if na == 0:
        return float("nan")
    return float(torch.linalg.vector_norm(x - y) / na)


def pair_metrics(a: torch.Tensor, b: torch.Tensor, *, top_p: float = 5.0, k: int = 10,
                 neuron_dim: int = 0, rank_rtol: float = 1e-3) -> dict[str, float | None]:
    """The four metrics of a pair (reference ``a``), ``None`` where undefined."""
    vals = {
        "cosine": cosine(a, b),
        "jaccard": jaccard(a, b, top_p, neuron_dim),
        "principal_angle_deg": principal_angle_deg(a, b, k, neuron_dim, rank_rtol),
        "relative_error": relative_error(a, b),
    }
    return {m: (None if v is None or math.isnan(v) else round(float(v), 6)) for m, v in vals.items()}


def check_matching(d_zh: Mapping[str, torch.Tensor], d_en: Mapping[str, torch.Tensor],
                   d_mix: Mapping[str, torch.Tensor]) -> list[str]:
    """Matrix names shared by the three runs, in zh order; :class:`DataError` if names or shapes differ."""
    names = {"zh": list(d_zh), "en": list(d_en), "mix": list(d_mix)}
    ref = set(names["zh"])
    for lang in ("en", "mix"):
        other = set(names[lang])
        if other != ref:
            only_zh, only_other = sorted(ref - other), sorted(other - ref)
            raise DataError(f"the zh and {lang} deltas edit different matrices: only in zh {only_zh}, "
                            f"only in {lang} {only_other}; run the three edits with the same method config")
    for n in names["zh"]:
        shapes = {lang: tuple(d[n].shape) for lang, d in (("zh", d_zh), ("en", d_en), ("mix", d_mix))}
        if len(set(shapes.values())) != 1:
            raise DataError(f"matrix {n!r} has different shapes across runs: {shapes}")
    if not names["zh"]:
        raise DataError("no edited matrices in the deltas (was the method a weight-editing one?)")
    return names["zh"]


def geometry_report(d_zh: Mapping[str, torch.Tensor], d_en: Mapping[str, torch.Tensor],
                    d_mix: Mapping[str, torch.Tensor], *, top_p: float = 5.0, k: int = 10,
                    layer: str | None = None, neuron_dims: Mapping[str, int] | None = None,
                    rank_rtol: float = 1e-3) -> dict[str, dict[str, dict[str, float | None]]]:
    """``geometry.json``: per matrix name, the independence pair (Δzh vs Δen) and the additivity
    pair (Δmix vs Δzh + Δen). ``layer`` keeps one matrix (clear error listing the names);
    ``neuron_dims`` overrides :func:`neuron_dim_for` per name."""
    names = check_matching(d_zh, d_en, d_mix)
    if layer is not None:
        if layer not in names:
            near = [n for n in names if layer in n]
            hint = f" (names containing it: {near})" if near else ""
            raise DataError(f"no edited matrix named {layer!r}{hint}; available: {names}")
        names = [layer]
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for n in names:
        nd = (neuron_dims or {}).get(n, neuron_dim_for(n))
        zh, en, mix = _f64(d_zh[n]), _f64(d_en[n]), _f64(d_mix[n])
        kw = dict(top_p=top_p, k=k, neuron_dim=nd, rank_rtol=rank_rtol)
        out[n] = {"independence": pair_metrics(zh, en, **kw),
                  "additivity": pair_metrics(mix, zh + en, **kw)}
    return out
