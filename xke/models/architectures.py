"""Per-architecture module names: the one table weight-editing methods read.

Each entry names, with ``{}`` standing for the layer index, the decoder
layers, one decoder layer, its MLP, the MLP's output (down) projection and
the attention output projection, plus the final norm.

To add an architecture, add an :class:`ArchSpec` to ``ARCHITECTURES`` under
its ``config.model_type`` (print ``model`` to see the module names).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ModelError


@dataclass(frozen=True)
class ArchSpec:
    """Module names of one architecture that xke's editors and analyses use (``{}``: the layer index)."""

    layers: str           # the ModuleList of decoder layers
    layer: str            # one decoder layer
    mlp: str              # the MLP block
    mlp_out: str          # the MLP's output projection (rank-one edits target its weight)
    attn_out: str         # the attention output projection
    final_norm: str


_LLAMA_LIKE = ArchSpec(
    layers="model.layers", layer="model.layers.{}", mlp="model.layers.{}.mlp",
    mlp_out="model.layers.{}.mlp.down_proj", attn_out="model.layers.{}.self_attn.o_proj", final_norm="model.norm",
)

#: Llama 2/3.x, Mistral, Qwen2/2.5, Qwen3, Gemma 1/2/3 (text), OLMo 2 and Phi-3 share these names. Gemma 2/3 and
#: OLMo 2 normalise the MLP's output before adding it to the residual stream (post_feedforward_layernorm):
#: the rank-one edit still sets the down projection's output, the residual sees its normalised value.
ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "gemma3_text": _LLAMA_LIKE,
    "olmo2": _LLAMA_LIKE,
    "phi3": _LLAMA_LIKE,
    "gpt2": ArchSpec(
        layers="transformer.h", layer="transformer.h.{}", mlp="transformer.h.{}.mlp",
        mlp_out="transformer.h.{}.mlp.c_proj", attn_out="transformer.h.{}.attn.c_proj", final_norm="transformer.ln_f",
    ),
    "gpt_neox": ArchSpec(
        layers="gpt_neox.layers", layer="gpt_neox.layers.{}", mlp="gpt_neox.layers.{}.mlp",
        mlp_out="gpt_neox.layers.{}.mlp.dense_4h_to_h", attn_out="gpt_neox.layers.{}.attention.dense",
        final_norm="gpt_neox.final_layer_norm",
    ),
}


#: architectures whose MLP is a mixture of experts: no single down projection to edit
MIXTURE_OF_EXPERTS = {"mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3", "dbrx",
                      "jamba", "gpt_oss", "phimoe", "granitemoe"}


def arch_spec(model: torch.nn.Module) -> ArchSpec:
    """The :class:`ArchSpec` for ``model`` (by ``config.model_type``); a clear error if unknown."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in MIXTURE_OF_EXPERTS:
        raise ModelError(
            f"{model_type!r} is a mixture-of-experts model: its MLP is several experts behind a router, so "
            "there is no single MLP projection for ROME/MEMIT/AlphaEdit/PMET/FT to edit (xke has no expert-wise "
            "editing). In-context methods (none, ike, lte, xkde) work; for weight edits use a dense model.")
    if model_type not in ARCHITECTURES:
        raise ModelError(
            f"architecture {model_type!r} has no layer-name entry; known: {', '.join(sorted(ARCHITECTURES))}. "
            "Add an ArchSpec for it to xke.models.architectures.ARCHITECTURES "
            "(print the model to see its module names).")
    return ARCHITECTURES[model_type]


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder layers: from the :class:`ArchSpec` when there is one, else the model's ``ModuleList``
    whose length is the config's layer count (no table entry needed)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in ARCHITECTURES:
        return get_module(model, ARCHITECTURES[model_type].layers)
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "get_text_config", lambda: cfg)()
    n = next((getattr(cfg, k) for k in ("num_hidden_layers", "n_layer", "num_layers")
              if isinstance(getattr(cfg, k, None), int)), None)
    lists = [(name, m) for name, m in model.named_modules()
             if isinstance(m, torch.nn.ModuleList) and len(m) > 0 and (n is None or len(m) == n)]
    if not lists:
        raise ModelError(f"cannot find the decoder layers of this {model_type!r} model (no ModuleList of "
                         f"{n} layers); add an ArchSpec to xke.models.architectures.ARCHITECTURES")
    return min(lists, key=lambda x: x[0].count("."))[1]  # the outermost one


def num_layers(model: torch.nn.Module) -> int:
    """Number of decoder layers."""
    return len(get_module(model, arch_spec(model).layers))


def get_module(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """The submodule called ``name``; a clear error listing near names if absent."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules()]
        stem = name.rsplit(".", 1)[0]
        near = [n for n in names if n.startswith(stem)][:10] or names[:10]
        raise ModelError(f"model has no module named {name!r}; nearby names: {near}") from None
