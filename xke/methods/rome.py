"""ROME: Rank-One Model Editing (Meng et al., 2022, "Locating and Editing Factual Associations in GPT").

For one MLP output projection ``W`` at layer ``l`` (preset per model):

1. key ``k*`` = input of ``W`` at the subject's last token, averaged over the context prefixes (eq. 3;
   rome ``compute_u.py``: a flat mean);
2. value ``v*`` = ``W``'s original output there plus ``δ``, where ``δ`` minimises the target NLL with a
   KL term on ``"{subject} is a"`` and the decay ``wd·‖δ‖/‖m‖²``, ``‖δ‖ ≤ clamp·‖m‖`` (eq. 4; ``m`` = the
   MLP output δ is added to, as in rome ``compute_v.py``) — optimised for all requests of a batch in one
   loop (:mod:`xke.methods.weight.targets`);
3. ``ΔW = (v* − W k)(C⁻¹k*)ᵀ / ((C⁻¹k*)ᵀ k)`` (eq. 2) with ``k`` the key on the bare prompt and ``C`` the
   key second moment (identity when ``mom2_adjustment`` is off).

A batch of requests is applied as successive rank-one updates, each request's ``v*`` optimised and its
update computed on the model already holding the previous ones (as the original does); MEMIT is the
method for true batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..data.schema import EditRequest
from ..models.architectures import get_module
from .base import EditHandle, register_method
from .weight.common import LocateConfig, LocateEditMethod
from .weight.targets import optimise_targets, request_keys
from .weight.update import add_to_weight, rome_directions, rome_update


@dataclass
class ROMEConfig(LocateConfig):
    layers: list[int] = field(default_factory=lambda: [1])
    #: ROME averages k* over all prompts (rome compute_u.py, eq. 3)
    key_grouping: str = "flat"

    def validate(self) -> None:
        super().validate()
        if len(self.layers) != 1:
            raise ValueError(f"ROME edits exactly one layer; got layers={self.layers}")


@register_method
class ROME(LocateEditMethod):
    name = "rome"
    config_class = ROMEConfig

    def apply(self, requests: Sequence[EditRequest]) -> EditHandle:
        requests = list(requests)
        mod_name = self.mlp_out(self.config.layers[0])
        self.check_target_layer(self.config.layers[0])
        seqs = [(self.rewrite_seqs([r]), self.kl_seqs([r])) for r in requests]   # errors before any change
        C = self.second_moments([mod_name])[mod_name] if self.config.mom2_adjustment else None
        handle = self.snapshot([mod_name])
        module = get_module(self.model, mod_name)
        for rewrite, kl in seqs:
            # one request at a time, each on the model holding the previous edits (as the original does)
            res = optimise_targets(self.model, self.tokenizer, rewrite, kl, 1, [mod_name],
                                   self.config.target_options())
            keys = res.keys[mod_name]                       # W's input at the subject, every rewrite prompt
            k_star = request_keys(keys, rewrite, 1, self.config.key_grouping)   # averaged over prefixes (eq. 3)
            k_plain = keys[:1]                               # the bare prompt
            v_star = res.inits[mod_name][0] + res.deltas[mod_name][0]
            u = rome_directions(k_star, C.to(k_star.device) if C is not None else None)
            with torch.no_grad():
                p = next(module.parameters())
                cur = module(k_plain.to(p.dtype)).float()[0]
            add_to_weight(self.model, mod_name, rome_update(u[0], k_plain[0], v_star, cur))
        return handle
