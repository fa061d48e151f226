"""AlphaEdit: null-space constrained knowledge editing (Fang et al., ICLR 2025).

MEMIT's targets and residual spread, with the update projected onto the null space of the preserved
keys: ``P = Û Ûᵀ`` where ``Û`` are the eigenvectors of ``C = E[k kᵀ]`` (the key second moment of the
unedited model) with eigenvalues below ``nullspace_threshold`` (eq. 9–10); per layer

``ΔW = R Kᵀ P (K_p K_pᵀ P + K Kᵀ P + αI)⁻¹``    (eq. 15, α = ``l2``)

where ``K_p`` are the keys of the edits made earlier by this method object (sequential editing).
The object accumulates ``P K_p K_pᵀ`` across :meth:`apply` calls (keys recomputed after each batch, as
the authors do); the handle's :meth:`restore` rolls that state back along with the weights.
``P`` is cached on disk per model/layer (keyed by the statistics and the threshold).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError
from ..paths import cache_dir
from .base import WeightSnapshot, register_method
from .memit import MEMIT, MEMITConfig, spread_edit
from .weight.targets import gather_at_subject, request_keys
from .weight.update import alphaedit_update, nullspace_projector


@dataclass
class AlphaEditConfig(MEMITConfig):
    layers: list[int] = field(default_factory=lambda: [0, 1])
    #: eigenvalues of C below this span the preserved keys' null space
    nullspace_threshold: float = 2e-2
    #: threshold relative to C's largest eigenvalue instead of absolute
    nullspace_relative: bool = False
    #: the null space holds at least this share of C's eigenvectors (those of the smallest eigenvalues),
    #: whatever the threshold: a spectrum flatter than the threshold assumes leaves edits some room
    nullspace_min_fraction: float = 0.0
    #: α, the ridge term of eq. 15
    l2: float = 10.0

    def validate(self) -> None:
        super().validate()
        if not self.mom2_adjustment:
            raise ValueError("AlphaEdit needs the key statistics (mom2_adjustment: true) for its null space")
        if self.nullspace_threshold <= 0 or self.l2 < 0:
            raise ValueError("nullspace_threshold must be > 0 and l2 >= 0")
        if not 0 <= self.nullspace_min_fraction < 1:
            raise ValueError(f"nullspace_min_fraction must be in [0, 1), got {self.nullspace_min_fraction}")


class PreservedKeys:
    """``P K_p K_pᵀ`` per module: the projected second moment of the keys of earlier edits (eq. 15's
    ``K_p K_pᵀ P``), accumulated over sequential :meth:`AlphaEdit.apply` calls."""

    def __init__(self):
        self.pkkt: dict[str, torch.Tensor] = {}

    def add(self, module: str, pkkt: torch.Tensor) -> None:
        """Add one batch's ``P K Kᵀ`` (out of place: a saved state stays valid)."""
        prev = self.pkkt.get(module)
        self.pkkt = {**self.pkkt, module: pkkt if prev is None else prev + pkkt}


class _AlphaHandle(WeightSnapshot):
    """Restores the weights and the preserved keys as they were before the edit."""

    def __init__(self, model, names, preserved: PreservedKeys):
        super().__init__(model, names)
        self._preserved, self._saved = preserved, preserved.pkkt

    def restore(self) -> None:
        super().restore()
        self._preserved.pkkt = self._saved


@register_method
class AlphaEdit(MEMIT):
    name = "alphaedit"
    config_class = AlphaEditConfig

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.preserved = PreservedKeys()
        self._P: dict[str, torch.Tensor] = {}

    def projector(self, module: str, C: torch.Tensor) -> torch.Tensor:
        """``P = Û Ûᵀ`` (eq. 9–10) for ``module``'s key second moment ``C``, cached in memory and on disk."""
        if module not in self._P:
            from safetensors.torch import load_file, save_file
            c = self.config
            h = hashlib.sha256(C.float().cpu().numpy().tobytes())
            h.update(f"{c.nullspace_threshold}|{c.nullspace_relative}|{c.nullspace_min_fraction}|{module}".encode())
            f = cache_dir("nullspace", h.hexdigest()[:24]) / "P.safetensors"
            if f.exists():
                P = load_file(str(f))["P"]
            else:
                P = nullspace_projector(C, c.nullspace_threshold, c.nullspace_relative, c.nullspace_min_fraction)
                save_file({"P": P.contiguous()}, str(f))
            rank = int(round(float(P.double().trace())))
            if rank == 0:
                raise ConfigError(
                    f"alphaedit: no eigenvalue of the key second moment of {module} is below nullspace_threshold="
                    f"{c.nullspace_threshold}{' x the largest' if c.nullspace_relative else ''}: the null space is "
                    f"empty, so every edit would be projected to zero. Raise nullspace_threshold (or set "
                    f"nullspace_min_fraction).")
            self._P[module] = P
        return self._P[module]

    def apply(self, requests):
        requests, plan = list(requests), self.plan()
        stats = self.second_moments(plan.mods)
        P = {m: self.projector(m, stats[m]) for m in plan.mods}   # every projector (and its errors) first
        handle = _AlphaHandle(self.model, [f"{m}.weight" for m in plan.mods], self.preserved)
        if not requests:
            return handle
        l2, rewrite = self.config.l2, self.rewrite_seqs(requests)
        spread_edit(self, requests, plan,
                    lambda mod, K, R: alphaedit_update(K, R, P[mod].to(K.device), self.preserved.pkkt.get(mod), l2),
                    rewrite)
        # the batch's keys under the edited weights join the preserved set (as the authors recompute them)
        g = gather_at_subject(self.model, self.tokenizer, rewrite, inputs=plan.mods)
        for m in plan.mods:
            K = request_keys(g[(m, "in")], rewrite, len(requests), self.config.key_grouping).double()
            self.preserved.add(m, ((P[m].to(K.device).double() @ K.T) @ K).cpu())     # P K Kᵀ: d² n, not d³
        return handle
