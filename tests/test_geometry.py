"""Geometry metrics of edit deltas on constructed matrices (CLM-Bench §6.2, Appendix C)."""

from __future__ import annotations

import math

import pytest
import torch

from xke.analysis import geometry as g
from xke.errors import DataError


def _orthogonal_pair(out=40, inp=30, r=3, seed=0):
    """Two matrices whose column spaces (output space) AND entries are orthogonal."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(out, 2 * r, generator=gen, dtype=torch.float64))
    ua, ub = q[:, :r], q[:, r:]
    a = ua @ torch.randn(r, inp, generator=gen, dtype=torch.float64)
    b = ub @ torch.randn(r, inp, generator=gen, dtype=torch.float64)
    return a, b


def test_orthogonal_cosine_zero_and_angles_90():
    a, b = _orthogonal_pair()
    assert abs(g.cosine(a, b)) < 1e-12
    ang = g.principal_angles(a, b, k=10)
    assert ang.numel() == 3  # rank-3 matrices: only 3 meaningful directions
    assert torch.allclose(torch.rad2deg(ang), torch.full((3,), 90.0, dtype=torch.float64), atol=1e-6)
    assert g.principal_angle_deg(a, b) == pytest.approx(90.0, abs=1e-6)
    # orthogonal, equal norm -> relative error sqrt(2)
    b2 = b * (torch.linalg.norm(a) / torch.linalg.norm(b))
    assert g.relative_error(a, b2) == pytest.approx(math.sqrt(2), rel=1e-9)


def test_full_rank_orthogonal_subspaces_k10():
    # 10-dim subspaces of R^40 that are orthogonal, full rank-10 matrices
    gen = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(40, 20, generator=gen, dtype=torch.float64))
    a = q[:, :10] @ torch.randn(10, 25, generator=gen, dtype=torch.float64)
    b = q[:, 10:] @ torch.randn(10, 25, generator=gen, dtype=torch.float64)
    ang = torch.rad2deg(g.principal_angles(a, b, k=10))
    assert ang.numel() == 10 and torch.all((ang - 90).abs() < 1e-6)


def test_identical_relative_error_zero_jaccard_one_angle_zero_cosine_one():
    a = torch.randn(50, 20, generator=torch.Generator().manual_seed(2))
    assert g.relative_error(a, a.clone()) == 0.0
    assert g.jaccard(a, a.clone(), p=5) == 1.0
    assert g.jaccard(a, a.clone(), p=37) == 1.0
    assert g.cosine(a, a.clone()) == pytest.approx(1.0, abs=1e-12)
    assert g.principal_angle_deg(a, a.clone(), k=10) == pytest.approx(0.0, abs=1e-4)
    # scaling keeps direction, subspace and top neurons
    assert g.cosine(a, 3 * a) == pytest.approx(1.0, abs=1e-12)
    assert g.jaccard(a, 3 * a) == 1.0


def test_jaccard_hand_computed():
    # 10 neurons (rows), p = 30% -> top 3 neurons each
    a = torch.zeros(10, 4)
    b = torch.zeros(10, 4)
    # a's largest rows: 0, 1, 2 ; b's largest rows: 1, 2, 7
    for i, v in {0: 9.0, 1: 8.0, 2: 7.0, 5: 1.0}.items():
        a[i] = v
    for i, v in {1: 5.0, 2: -6.0, 7: 4.0, 0: 0.5}.items():
        b[i] = v
    assert g.top_neurons(a, 30) == {0, 1, 2}
    assert g.top_neurons(b, 30) == {1, 2, 7}     # absolute change: the -6 row counts
    assert g.jaccard(a, b, p=30) == pytest.approx(2 / 4)
    # p = 5% of 10 neurons -> ceil(0.5) = 1 neuron: {0} vs {2}
    assert g.jaccard(a, b, p=5) == 0.0


def test_neuron_is_output_row_and_conv1d_column():
    # Linear [out=6, in=3]: neuron = row. Make row 4 the biggest change.
    lin = torch.zeros(6, 3)
    lin[4, :] = 1.0
    lin[:, 0] += 0.1
    assert g.top_neurons(lin, p=10) == {4}
    # the same change stored as Conv1D [in=3, out=6]: neuron = column
    conv = lin.T.contiguous()
    assert g.top_neurons(conv, p=10, neuron_dim=1) == {4}
    assert g.neuron_dim_for("transformer.h.3.mlp.c_proj.weight") == 1
    assert g.neuron_dim_for("model.layers.3.mlp.down_proj.weight") == 0


def test_additivity_exact_sum_is_zero_error():
    gen = torch.Generator().manual_seed(3)
    zh = torch.randn(32, 16, generator=gen)
    en = torch.randn(32, 16, generator=gen)
    mix = zh + en
    rep = g.geometry_report({"w": zh}, {"w": en}, {"w": mix}, top_p=10, k=10)
    add = rep["w"]["additivity"]
    assert add["relative_error"] == pytest.approx(0.0, abs=1e-6)
    assert add["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert add["jaccard"] == 1.0
    assert add["principal_angle_deg"] == pytest.approx(0.0, abs=1e-3)


def test_geometry_report_shape_and_pairs():
    a, b = _orthogonal_pair(out=20, inp=8, r=2, seed=4)
    rep = g.geometry_report({"m.w": a, "n.w": a}, {"m.w": b, "n.w": a}, {"m.w": a + b, "n.w": 2 * a})
    assert list(rep) == ["m.w", "n.w"]
    for name, r in rep.items():
        assert set(r) == {"independence", "additivity"}
        for pair in r.values():
            assert set(pair) == set(g.METRICS)
    assert rep["m.w"]["independence"]["cosine"] == pytest.approx(0.0, abs=1e-9)
    assert rep["m.w"]["independence"]["principal_angle_deg"] == pytest.approx(90.0, abs=1e-6)
    assert rep["m.w"]["additivity"]["relative_error"] == pytest.approx(0.0, abs=1e-9)
    assert rep["n.w"]["independence"]["relative_error"] == 0.0
    assert rep["n.w"]["independence"]["jaccard"] == 1.0
    # --layer
    only = g.geometry_report({"m.w": a}, {"m.w": b}, {"m.w": a + b}, layer="m.w")
    assert list(only) == ["m.w"]
    with pytest.raises(DataError, match="available"):
        g.geometry_report({"m.w": a}, {"m.w": b}, {"m.w": a + b}, layer="nope")


def test_mismatched_inputs_clear_errors():
    a = torch.ones(4, 3)
    with pytest.raises(DataError, match="different matrices"):
        g.geometry_report({"x": a}, {"y": a}, {"x": a})
    with pytest.raises(DataError, match="different shapes"):
        g.geometry_report({"x": a}, {"x": torch.ones(3, 4)}, {"x": a})


def test_zero_delta_is_undefined_not_crash():
    z = torch.zeros(5, 5)
    a = torch.eye(5)
    rep = g.geometry_report({"w": z}, {"w": a}, {"w": a})
    ind = rep["w"]["independence"]
    assert ind["cosine"] is None and ind["relative_error"] is None and ind["principal_angle_deg"] is None
