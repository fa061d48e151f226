"""Closed-form weight updates and writing them into the model.

Notation (one MLP output projection ``W: d_in -> d_out``): keys ``K`` are ``[d_in, n]`` (one column per
edit), residuals ``R`` are ``[d_out, n]``, ``C = E[k kᵀ]`` is the key second moment.

- ROME (Meng et al. 2022, eq. 2): ``ΔW = (v* − W k) (C⁻¹k*)ᵀ / ((C⁻¹k*)ᵀ k)`` so that ``(W+ΔW) k = v*``.
- MEMIT (Meng et al. 2023, eq. 14): ``ΔW = R Kᵀ (λC + K Kᵀ)⁻¹``.
- AlphaEdit (Fang et al. 2025, eq. 15): ``ΔW = R Kᵀ P (K_p K_pᵀ P + K Kᵀ P + αI)⁻¹`` with ``P`` the projector
  onto the null space of ``C`` and ``K_p`` the keys of earlier edits.

All solves run in float64; the result is cast to the weight's dtype when written.
"""

from __future__ import annotations

import torch

from ...models.architectures import get_module


def is_conv1d(module: torch.nn.Module) -> bool:
    """transformers' ``Conv1D`` stores ``[in, out]`` (GPT-2)."""
    return type(module).__name__ == "Conv1D"


def get_weight(model: torch.nn.Module, module_name: str) -> tuple[torch.nn.Parameter, bool]:
    """The weight of ``module_name`` and whether it is transposed (Conv1D)."""
    mod = get_module(model, module_name)
    return mod.weight, is_conv1d(mod)


def add_to_weight(model: torch.nn.Module, module_name: str, upd: torch.Tensor) -> None:
    """``W += upd`` where ``upd`` is ``[d_out, d_in]`` (transposed for Conv1D)."""
    w, transposed = get_weight(model, module_name)
    u = upd.T if transposed else upd
    if u.shape != w.shape:
        raise ValueError(f"update shape {tuple(upd.shape)} does not fit {module_name} weight {tuple(w.shape)}")
    with torch.no_grad():
        w.add_(u.to(device=w.device, dtype=w.dtype))


def memit_update(K: torch.Tensor, R: torch.Tensor, C: torch.Tensor | None, lam: float) -> torch.Tensor:
    """``R Kᵀ (λC + KKᵀ)⁻¹`` as ``[d_out, d_in]``; ``C=None`` means identity."""
    K, R = K.double(), R.double()
    d = K.shape[0]
    A = K @ K.T
    A = A + lam * (C.to(K.device).double() if C is not None else torch.eye(d, dtype=A.dtype, device=A.device))
    adj = torch.linalg.solve(A, K)          # [d_in, n] = A⁻¹K  (A symmetric)
    return R @ adj.T


def rome_directions(k_star: torch.Tensor, C: torch.Tensor | None) -> torch.Tensor:
    """Unit left vectors ``u_i ∝ C⁻¹k*_i`` for ``k_star`` ``[n, d_in]`` (one solve for all; ``C=None``: ``k*``)."""
    k = k_star.double()
    u = torch.linalg.solve(C.to(k.device).double(), k.T).T if C is not None else k
    return u / u.norm(dim=1, keepdim=True)


def rome_update(u: torch.Tensor, k: torch.Tensor, v_star: torch.Tensor, Wk: torch.Tensor) -> torch.Tensor:
    """Rank-one ``ΔW = (v* − Wk) uᵀ / (uᵀk)`` (Meng et al. 2022, eq. 2) as ``[d_out, d_in]``."""
    u, k = u.double(), k.double()
    right = (v_star.double() - Wk.double()) / (u @ k)
    return torch.outer(right, u)


def nullspace_projector(C: torch.Tensor, threshold: float, relative: bool = False,
                        min_fraction: float = 0.0) -> torch.Tensor:
    """``P = Û Ûᵀ`` with ``Û`` the eigenvectors of ``C`` whose eigenvalues are below ``threshold``
    (AlphaEdit eq. 9–10; times the largest eigenvalue when ``relative``), and never fewer than
    ``round(min_fraction · d)`` of them: those of the smallest eigenvalues."""
    U, S, _ = torch.linalg.svd(C.double())      # S in descending order
    below = int((S < (threshold * float(S.max()) if relative else threshold)).sum())
    k = max(below, int(round(min_fraction * len(S))))
    Uh = U[:, len(S) - k:]
    return (Uh @ Uh.T).float()


def alphaedit_update(K: torch.Tensor, R: torch.Tensor, P: torch.Tensor, prev_PKKt: torch.Tensor | None,
                     l2: float) -> torch.Tensor:
    """``R Kᵀ P (K_pK_pᵀP + KKᵀP + αI)⁻¹`` as ``[d_out, d_in]`` (the paper's eq. 15), computed as the
    transpose of one solve with ``P(K_pK_pᵀ + KKᵀ) + αI``; ``prev_PKKt`` is ``P K_pK_pᵀ`` of the earlier
    edits (kept by the caller), so no ``d³`` product is formed per edit."""
    K, R, P = K.double(), R.double(), P.to(K.device).double()
    d = K.shape[0]
    PK = P @ K
    A = PK @ K.T + l2 * torch.eye(d, dtype=K.dtype, device=K.device)
    if prev_PKKt is not None:
        A = A + prev_PKKt.to(K.device).double()
    X = torch.linalg.solve(A, PK @ R.T)  # [d_in, d_out]
    return X.T
