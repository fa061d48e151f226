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
from .memit import MEMITConfig, _SpreadMethod
from .weight.targets import gather_at_subject, request_keys
from .weight.update import alphaedit_update, nullspace_projector


@dataclass
class AlphaEditConfig(MEMITConfig):
    layers: list[int] = field(default_factory=lambda: [0, 1])
    #: eigenvalues of C below this span the preserved keys' null space
    nullspace_threshold: float = 2e-2
    #: threshold relative to C's largest eigenvalue instead of absolute
    nullspace_relative: bool = False
    #: α, the ridge term of eq. 15
    l2: float = 10.0

    def validate(self) -> None:
        super().validate()
        if not self.mom2_adjustment:
            raise ValueError("AlphaEdit needs the key statistics (mom2_adjustment: true) for its null space")
        if self.nullspace_threshold <= 0 or self.l2 < 0:
            raise ValueError("nullspace_threshold must be > 0 and l2 >= 0")


class _AlphaHandle(WeightSnapshot):
    def __init__(self, method: "AlphaEdit", model, names):
        super().__init__(model, names)
        self._method = method
        self._prev = dict(method._prev_pkkt)   # tensors are replaced, never modified in place

    def restore(self) -> None:
        super().restore()
        self._method._prev_pkkt = dict(self._prev)


@register_method
class AlphaEdit(_SpreadMethod):
    name = "alphaedit"
    config_class = AlphaEditConfig

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._prev_pkkt: dict[str, torch.Tensor] = {}
        self._P: dict[str, torch.Tensor] = {}

    def needs_stats(self) -> bool:
        return True

    def make_handle(self, mods):
        return _AlphaHandle(self, self.model, [f"{m}.weight" for m in mods])

    def projector(self, module: str, C: torch.Tensor) -> torch.Tensor:
        if module not in self._P:
            from safetensors.torch import load_file, save_file
            c = self.config
            h = hashlib.sha256(C.float().cpu().numpy().tobytes())
            h.update(f"{c.nullspace_threshold}|{c.nullspace_relative}|{module}".encode())
            f = cache_dir("nullspace", h.hexdigest()[:24]) / "P.safetensors"
            if f.exists():
                P = load_file(str(f))["P"]
            else:
                P = nullspace_projector(C, c.nullspace_threshold, c.nullspace_relative)
                save_file({"P": P.contiguous()}, str(f))
            rank = int(round(float(P.double().trace())))
            if rank == 0:
                raise ConfigError(
                    f"alphaedit: no eigenvalue of the key second moment of {module} is below nullspace_threshold="
                    f"{c.nullspace_threshold}{' x the largest' if c.nullspace_relative else ''}: the null space is "
                    f"empty, so every edit would be projected to zero. Raise nullspace_threshold.")
            self._P[module] = P
        return self._P[module]

    def solve(self, i, module, K, R, C):
        P = self.projector(module, C).to(K.device)
        return alphaedit_update(K, R, P, self._prev_pkkt.get(module), self.config.l2)

    def after_batch(self, reqs, mods, ks):
        """Keys of this batch under the edited weights join the preserved set (out of place: see handle)."""
        rewrite = self.rewrite_seqs(reqs)
        g = gather_at_subject(self.model, self.tokenizer, rewrite, inputs=mods)
        for m in mods:
            K = request_keys(g[(m, "in")], rewrite, len(reqs), self.config.key_grouping).double()
            pkkt = ((self._P[m].to(K.device).double() @ K.T) @ K).cpu()     # P K Kᵀ: d² n, not d³
            prev = self._prev_pkkt.get(m)
            self._prev_pkkt[m] = pkkt if prev is None else prev + pkkt

    def apply(self, requests):
        mods = [self.mlp_out(l) for l in self.config.layers]
        stats = self.second_moments(mods)
        for m in mods:                 # every projector (and its errors) before any weight changes
            self.projector(m, stats[m])
        return super().apply(requests)
