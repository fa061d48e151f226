"""PMET: Precise Model Editing in a Transformer (Li et al., AAAI 2024).

Attention and MLP outputs at the last edited layer ``L`` are optimised jointly (two vectors per request
added at the subject's last token, each with its own norm clamp and weight decay); only the MLP
target ``z_mlp = m^L + δ_mlp`` is used to update the MLP output projections of the edited layers, with
the paper's residual split ``R = (z_mlp − m^L) / sqrt(layers left)`` and ``ΔW = R Kᵀ (λC + KKᵀ)⁻¹``.
The NLL term carries a factor (``nll_factor``) that drops to 0.1× once every target token is already
the argmax, and a request stops early once, in addition, its KL term is below 0.01.
All requests of a batch are optimised in one loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import register_method
from .memit import MEMIT, SpreadPlan
from .weight.common import LocateConfig


@dataclass
class PMETConfig(LocateConfig):
    layers: list[int] = field(default_factory=lambda: [0, 1])
    nll_factor: float = 1.0
    adaptive_nll: bool = True

    def validate(self) -> None:
        super().validate()
        if self.nll_factor <= 0:
            raise ValueError("nll_factor must be > 0")


@register_method
class PMET(MEMIT):
    name = "pmet"
    config_class = PMETConfig

    def plan(self) -> SpreadPlan:
        """PMET's sites: δ on the attention and the MLP output of layer ``L``; the MLP target is spread
        with ``R / sqrt(layers left)`` (EasyEdit ``pmet_main.py``)."""
        layers = list(self.config.layers)
        mods, L = [self.mlp_out(l) for l in layers], layers[-1]      # out-of-range layers fail here first
        self.check_target_layer(L)
        return SpreadPlan(layers, mods, [self.attn_out(L), self.mlp_out(L)],
                          self.mlp_out(L), 0.5, self.config.target_options(nll_factor=self.config.nll_factor,
                                                                          adaptive_nll=self.config.adaptive_nll))
