"""MEMIT: Mass-Editing Memory in a Transformer (Meng et al., 2023).

1. Target residuals ``z_i = h_i^L + δ_i`` at the last edited layer ``L`` (subject's last token), ``δ`` found
   by the ROME objective (eq. 16 of the paper) — for ALL requests of the batch in one batched loop
   (EasyEdit optimises them one request at a time). As in memit ``compute_z.py``, ``‖δ‖ ≤ clamp·‖h^L‖`` and
   the decay is ``wd·‖δ‖/‖h^L‖²`` with ``h^L`` the residual δ is added to (``delta_bound: residual``;
   ``mlp_output`` bounds δ by the MLP output's norm instead, xke < 0.2);
2. for each edited layer ``l`` in increasing order: keys ``K`` (MLP output-projection input at the subject,
   averaged within template groups then across them as in memit ``compute_ks.py`` — ``key_grouping`` —
   recomputed after the previous layers were edited), residual
   ``R = (z − h^L) / (number of layers left)`` (the residual spread, eq. 20), and
   ``ΔW = R Kᵀ (λC + KKᵀ)⁻¹`` (eq. 14) with ``C = E[kkᵀ]`` from :mod:`xke.methods.weight.stats`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..data.schema import EditRequest
from .base import EditHandle, register_method
from .weight.common import LocateConfig, LocateEditMethod
from .weight.targets import Seq, TargetOptions, gather_at_subject, optimise_targets, request_keys
from .weight.update import add_to_weight, memit_update


@dataclass
class MEMITConfig(LocateConfig):
    layers: list[int] = field(default_factory=lambda: [0, 1])
    #: what bounds δ (and scales its decay): "residual" = ‖h^L‖, the residual stream δ is added to
    #: (memit compute_z.py: max_norm = clamp_norm_factor · ‖target_init‖, target_init = layer L's output);
    #: "mlp_output" = the norm of layer L's MLP output (xke < 0.2: several times weaker edits)
    delta_bound: str = "residual"

    def validate(self) -> None:
        super().validate()
        if self.delta_bound not in ("residual", "mlp_output"):
            raise ValueError(f"delta_bound must be 'residual' or 'mlp_output', got {self.delta_bound!r}")


@dataclass(frozen=True)
class SpreadPlan:
    """What a MEMIT-family edit optimises and spreads; MEMIT, PMET and AlphaEdit differ here and in the solve."""

    layers: list[int]
    #: the MLP output projections updated, one per layer of ``layers``
    mods: list[str]
    #: modules whose outputs receive a δ during the target optimisation; the last one's δ defines ``z``
    sites: list[str]
    #: the module whose output at the subject's last token is the target's base value (``z = h + δ``)
    z_site: str
    #: ``R = (z − h) / (layers left) ** residual_power`` (MEMIT eq. 20: 1; PMET: 0.5)
    residual_power: float
    options: TargetOptions


#: ``(module, Kᵀ [d_in, n], Rᵀ [d_out, n], ) -> ΔW`` for one layer (MEMIT eq. 14, AlphaEdit eq. 15, ...)
Solve = Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor]


def spread_edit(method: LocateEditMethod, requests: list[EditRequest], plan: SpreadPlan, solve: Solve,
                rewrite: list[Seq] | None = None) -> dict[str, torch.Tensor]:
    """MEMIT's edit (Meng et al., 2023, Alg. 1) of ``requests`` into ``plan.mods``, in place.

    Target vectors ``z_i = h_i + δ_i`` for all requests in one optimisation (eq. 16); then per layer, in
    increasing order, the keys ``K`` (recomputed after the previous layers were edited), the residual
    ``R = (z − h) / (layers left) ** p`` and ``ΔW = solve(module, Kᵀ, Rᵀ)`` added to the weight. Returns the
    keys ``K`` [n, d_in] used per module. ``rewrite``: the requests' rewrite sequences, if the caller
    has them already (``method.rewrite_seqs(requests)``).
    """
    model, tok = method.model, method.tokenizer
    rewrite = method.rewrite_seqs(requests) if rewrite is None else rewrite
    kl = method.kl_seqs(requests)
    n = len(requests)
    first_of: dict[int, int] = {}
    for i, s in enumerate(rewrite):
        first_of.setdefault(s.req, i)
    first = torch.tensor([first_of[r] for r in range(n)])      # each request's bare-prompt row (O(rows))
    plain = [rewrite[i] for i in first.tolist()]
    g0 = gather_at_subject(model, tok, plain, outputs=[plan.z_site])
    res = optimise_targets(model, tok, rewrite, kl, n, plan.sites, plan.options)
    z = g0[(plan.z_site, "out")] + res.deltas[plan.sites[-1]]
    keys_used: dict[str, torch.Tensor] = {}
    for i, mod in enumerate(plan.mods):
        g = gather_at_subject(model, tok, rewrite, inputs=[mod], outputs=[plan.z_site])
        K = request_keys(g[(mod, "in")], rewrite, n, method.config.key_grouping)   # [n, d_in]
        cur = g[(plan.z_site, "out")][first.to(g[(plan.z_site, "out")].device)]      # [n, d]
        R = (z.to(cur.device) - cur) / (len(plan.mods) - i) ** plan.residual_power
        add_to_weight(model, mod, solve(mod, K.T, R.T))
        keys_used[mod] = K
    return keys_used


@register_method
class MEMIT(LocateEditMethod):
    name = "memit"
    config_class = MEMITConfig

    def plan(self) -> SpreadPlan:
        """MEMIT's sites: δ on the residual after the last edited layer ``L`` (memit ``compute_z.py``)."""
        layers = list(self.config.layers)
        mods, L = [self.mlp_out(l) for l in layers], layers[-1]      # out-of-range layers fail here first
        self.check_target_layer(L)
        bound = ({self.mlp_out(L): self.layer_module(L)} if self.config.delta_bound == "residual" else {})
        return SpreadPlan(layers, mods, [self.mlp_out(L)], self.layer_module(L), 1.0,
                          self.config.target_options(norm_modules=bound))

    def apply(self, requests: Sequence[EditRequest]) -> EditHandle:
        requests, plan = list(requests), self.plan()
        stats = self.second_moments(plan.mods) if self.config.mom2_adjustment else {}
        handle = self.snapshot(plan.mods)
        if requests:
            lam = self.config.mom2_update_weight
            spread_edit(self, requests, plan, lambda mod, K, R: memit_update(K, R, stats.get(mod), lam))
        return handle
