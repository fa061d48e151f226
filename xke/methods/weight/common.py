"""Config fields and base class shared by the locate-and-edit methods (ROME, MEMIT, AlphaEdit, PMET)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ...errors import ModelError
from ...models.architectures import arch_spec, get_module, num_layers
from ..base import EditMethod, MethodConfig, WeightSnapshot
from .stats import model_weight_hash, resolve_corpus, second_moments
from .targets import DEFAULT_KL, TargetOptions, build_kl_seqs, build_rewrite_seqs


@dataclass
class LocateConfig(MethodConfig):
    """Options shared by ROME, MEMIT, AlphaEdit and PMET (see each preset for per-model values)."""

    layers: list[int] = field(default_factory=lambda: [1])
    #: layers for a model with this many decoder layers (replaces ``layers`` there), so that one preset
    #: fits models of several depths, e.g. ``{2: [0]}`` with ``layers: [0, 1]``
    layers_by_depth: dict[int, list[int]] = field(default_factory=dict)
    #: module templates ("{}" = layer); default from xke.models.architectures
    mlp_out_module: str | None = None
    attn_out_module: str | None = None
    #: context prefixes per language ("default" for the rest); "" = the bare prompt (keep it first)
    context_prefixes: dict[str, Any] = field(default_factory=lambda: {"default": [""]})
    #: KL ("essence") prompts per language; "{}" = subject
    kl_prompts: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_KL))
    v_steps: int = 25
    v_lr: float = 0.5
    v_weight_decay: float = 1e-3
    #: decay term: "norm" = v_weight_decay·‖δ‖/‖h‖² (rome compute_v.py, memit compute_z.py, EasyEdit);
    #: "squared" = v_weight_decay·‖δ‖²/‖h‖² (xke before 0.2)
    v_decay_form: str = "norm"
    #: key of a request from its prompts: "templates" = mean within the bare-prompt group and the
    #: prefixed group, then across groups (memit compute_ks.py); "flat" = mean over all prompts (ROME eq. 3)
    key_grouping: str = "templates"
    clamp_norm_factor: float = 4.0
    kl_factor: float = 0.0625
    stop_loss: float = 5e-2
    max_requests_per_loop: int = 0
    #: run the layers before the edit site (and the tokens before the subject) once per batch and start
    #: every optimisation step from the cached stream; off = a full forward pass per step (same result)
    reuse_prefix_layers: bool = True
    #: key second-moment statistics
    mom2_adjustment: bool = True
    stats_corpus: str | None = None
    mom2_n_samples: int = 10000
    mom2_max_length: int = 256
    mom2_batch_size: int = 16
    mom2_dtype: str = "float32"
    mom2_update_weight: float = 15000.0
    #: show progress bars (statistics)
    progress: bool = True
    #: an edit whose subject is not in its prompt: skip (xke eval leaves the case out and counts it),
    #: last (edit at the prompt's last token) or fail (see xke.methods.weight.subject)
    subject_not_found: str = "skip"

    def validate(self) -> None:
        for where, lst in [("layers", self.layers)] + [(f"layers_by_depth[{k}]", v) for k, v in self.layers_by_depth.items()]:
            if not isinstance(lst, list) or not lst or not all(isinstance(l, int) and not isinstance(l, bool) for l in lst):
                raise ValueError(f"{where} must list at least one layer index, got {lst!r}")
            if any(l < 0 for l in lst):
                raise ValueError(f"{where} must be >= 0, got {lst}")
            if sorted(set(lst)) != list(lst):
                raise ValueError(f"{where} must be increasing and distinct, got {lst}")
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.layers_by_depth):
            raise ValueError(f"layers_by_depth keys must be numbers of decoder layers (>= 1), got {list(self.layers_by_depth)}")
        if self.v_steps < 1 or self.v_lr <= 0:
            raise ValueError("v_steps must be >= 1 and v_lr > 0")
        if self.clamp_norm_factor <= 0:
            raise ValueError("clamp_norm_factor must be > 0")
        if self.v_decay_form not in ("norm", "squared"):
            raise ValueError(f"v_decay_form must be 'norm' or 'squared', got {self.v_decay_form!r}")
        if self.key_grouping not in ("templates", "flat"):
            raise ValueError(f"key_grouping must be 'templates' or 'flat', got {self.key_grouping!r}")
        if self.mom2_n_samples < 1:
            raise ValueError("mom2_n_samples must be >= 1")
        if self.mom2_dtype not in ("float32", "float64"):
            raise ValueError("mom2_dtype must be float32 or float64")
        if self.subject_not_found not in ("skip", "last", "fail"):
            raise ValueError(f"subject_not_found must be skip, last or fail, got {self.subject_not_found!r}")
        if "default" not in self.context_prefixes:
            raise ValueError("context_prefixes needs a 'default' entry")
        for k, v in self.context_prefixes.items():
            if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
                raise ValueError(f"context_prefixes[{k!r}] must be a non-empty list of strings")

    def target_options(self, **kw) -> TargetOptions:
        return TargetOptions(steps=self.v_steps, lr=self.v_lr, weight_decay=self.v_weight_decay,
                             clamp_norm_factor=self.clamp_norm_factor, kl_factor=self.kl_factor,
                             stop_loss=self.stop_loss, max_requests_per_loop=self.max_requests_per_loop,
                             reuse_prefix_layers=self.reuse_prefix_layers, decay_form=self.v_decay_form, **kw)


def module_for_layer(model: torch.nn.Module, method: str, field_name: str, template: str | None,
                     layer: int) -> str:
    """Module name of ``field_name`` (``mlp_out``/``attn_out``) at ``layer``; ModelError for a bad layer or name."""
    tmpl = template or getattr(arch_spec(model), field_name)
    n = num_layers(model)
    if not 0 <= layer < n:
        raise ModelError(f"{method}: layer {layer} is out of range for this {model.config.model_type} model "
                         f"with {n} layers; valid layers are 0..{n - 1} ({tmpl.format(layer)!r} does not exist)")
    name = tmpl.format(layer)
    get_module(model, name)  # clear error listing near names
    return name


class LocateEditMethod(EditMethod):
    """Base of ROME/MEMIT/AlphaEdit/PMET: module names, prompts, statistics cache, snapshots."""

    kind = "weight"
    config: LocateConfig

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        if self.config.layers_by_depth:
            chosen = self.config.layers_by_depth.get(num_layers(self.model))
            if chosen is not None:
                self.config = dataclasses.replace(self.config, layers=list(chosen))
        self._weight_hash: str | None = None
        self._stats_mem: dict[str, torch.Tensor] = {}   # per-instance, never module-level

    # --- names ----------------------------------------------------------------------------------
    def mlp_out(self, layer: int) -> str:
        return module_for_layer(self.model, self.name, "mlp_out", self.config.mlp_out_module, layer)

    def attn_out(self, layer: int) -> str:
        return module_for_layer(self.model, self.name, "attn_out", self.config.attn_out_module, layer)

    def check_target_layer(self, layer: int) -> None:
        """Refuse a target layer with no decoder layer after it: δ added at the subject's last token there
        reaches no later token (no attention follows), so the edit could not change the answer."""
        n = num_layers(self.model)
        if layer >= n - 1:
            raise ModelError(f"{self.name}: layer {layer} is the last decoder layer of this {n}-layer model; a target "
                             f"vector at the subject's last token there cannot reach the answer tokens. Edit an "
                             f"earlier layer (layers: [...] with the last one <= {n - 2}).")

    def layer_module(self, layer: int) -> str:
        module_for_layer(self.model, self.name, "mlp_out", self.config.mlp_out_module, layer)
        return arch_spec(self.model).layer.format(layer)

    # --- prompts --------------------------------------------------------------------------------
    def rewrite_seqs(self, requests):
        return build_rewrite_seqs(self.tokenizer, self.formatter, requests, self.config.context_prefixes)

    def kl_seqs(self, requests):
        return build_kl_seqs(self.tokenizer, requests, self.config.kl_prompts) if self.config.kl_factor > 0 else []

    # --- statistics -----------------------------------------------------------------------------
    def second_moments(self, module_names: Sequence[str]) -> dict[str, torch.Tensor]:
        """``E[kkᵀ]`` for each module's input (first call hashes the weights: the unedited model's stats)."""
        c = self.config
        corpus = resolve_corpus(self.model, c.stats_corpus)
        if self._weight_hash is None:
            self._weight_hash = model_weight_hash(self.model)
        return second_moments(self.model, self.tokenizer, list(module_names), corpus=corpus,
                              n_samples=c.mom2_n_samples, max_length=c.mom2_max_length,
                              batch_size=c.mom2_batch_size, dtype=c.mom2_dtype, weight_hash=self._weight_hash,
                              progress=c.progress, memory=self._stats_mem)

    def snapshot(self, module_names: Sequence[str]) -> WeightSnapshot:
        return WeightSnapshot(self.model, [f"{n}.weight" for n in module_names])
