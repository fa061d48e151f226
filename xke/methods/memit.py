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
from typing import Sequence

import torch

from ..data.schema import EditRequest
from .base import EditHandle, register_method
from .weight.common import LocateConfig, LocateEditMethod
from .weight.targets import gather_at_subject, optimise_targets, request_keys
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


class _SpreadMethod(LocateEditMethod):
    """MEMIT's machinery; AlphaEdit and PMET change the target sites, the residual split and the solve."""

    residual_power: float = 1.0   # R = (z − h) / (layers left) ** residual_power

    def target_sites(self) -> list[str]:
        return [self.mlp_out(self.config.layers[-1])]

    def z_module(self) -> tuple[str, str]:
        """Where the target lives: (module name, "out") — MEMIT: the residual after layer L."""
        return self.layer_module(self.config.layers[-1]), "out"

    def z_init(self, res, cur0: torch.Tensor) -> torch.Tensor:
        return cur0 + res.deltas[self.target_sites()[-1]]

    def solve(self, i: int, module: str, K: torch.Tensor, R: torch.Tensor, C: torch.Tensor | None) -> torch.Tensor:
        return memit_update(K, R, C, self.config.mom2_update_weight)

    def needs_stats(self) -> bool:
        return self.config.mom2_adjustment

    def after_batch(self, requests: list[EditRequest], mods: list[str], ks: dict[str, torch.Tensor]) -> None:
        """Hook run once the batch ``requests`` is written into ``mods`` (``ks``: the keys used per module)."""
        return None

    def make_handle(self, mods: list[str]) -> EditHandle:
        return self.snapshot(mods)

    def apply(self, requests: Sequence[EditRequest]) -> EditHandle:
        requests = list(requests)
        layers = list(self.config.layers)
        mods = [self.mlp_out(l) for l in layers]
        self.check_target_layer(layers[-1])
        zmod, zkind = self.z_module()
        sites = self.target_sites()
        rewrite, kl = self.rewrite_seqs(requests), self.kl_seqs(requests)
        stats = self.second_moments(mods) if self.needs_stats() else {}
        handle = self.make_handle(mods)
        if not requests:
            return handle
        n = len(requests)
        first_of: dict[int, int] = {}
        for i, s in enumerate(rewrite):
            first_of.setdefault(s.req, i)
        first = torch.tensor([first_of[r] for r in range(n)])      # each request's bare-prompt row (O(rows))
        plain = [rewrite[i] for i in first.tolist()]
        g0 = gather_at_subject(self.model, self.tokenizer, plain, outputs=[zmod])
        res = optimise_targets(self.model, self.tokenizer, rewrite, kl, n, sites, self.target_options())
        z = self.z_init(res, g0[(zmod, zkind)])
        keys_used: dict[str, torch.Tensor] = {}
        for i, (layer, mod) in enumerate(zip(layers, mods)):
            g = gather_at_subject(self.model, self.tokenizer, rewrite, inputs=[mod], outputs=[zmod])
            K = request_keys(g[(mod, "in")], rewrite, n, self.config.key_grouping)   # [n, d_in]
            cur = g[(zmod, "out")][first.to(g[(zmod, "out")].device)]      # [n, d]
            R = (z.to(cur.device) - cur) / (len(layers) - i) ** self.residual_power
            upd = self.solve(i, mod, K.T, R.T, stats.get(mod))
            add_to_weight(self.model, mod, upd)
            keys_used[mod] = K
        self.after_batch(requests, mods, keys_used)
        return handle

    def target_options(self):
        L = self.config.layers[-1]
        bound = ({self.mlp_out(L): self.layer_module(L)} if self.config.delta_bound == "residual" else {})
        return self.config.target_options(norm_modules=bound)


@register_method
class MEMIT(_SpreadMethod):
    name = "memit"
    config_class = MEMITConfig
