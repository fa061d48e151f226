"""Model families: the architecture table on real config classes, and layer analysis without a table entry."""

from __future__ import annotations

import pytest
import torch

from xke.errors import ModelError
from xke.models.architectures import ARCHITECTURES, arch_spec, decoder_layers, get_module, num_layers

SMALL = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=1, max_position_embeddings=64, vocab_size=64, bos_token_id=1, eos_token_id=2,
             pad_token_id=0)


def _model(model_type: str, **extra):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(SMALL, **extra) if model_type not in ("gpt2",) else dict(n_embd=16, n_layer=2, n_head=2,
                                                                        n_positions=64, vocab_size=64)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **cfg)).eval()


@pytest.mark.parametrize("model_type, extra", [
    ("llama", {}), ("mistral", {}), ("qwen2", {}), ("qwen3", dict(head_dim=8)), ("gemma", dict(head_dim=8)),
    ("gemma2", dict(head_dim=8, query_pre_attn_scalar=8)), ("gemma3_text", dict(head_dim=8, query_pre_attn_scalar=8)),
    ("phi3", {}), ("olmo2", {}), ("gpt2", {}),
])
def test_every_table_entry_names_real_modules(model_type, extra):
    model = _model(model_type, **extra)
    spec = arch_spec(model)
    assert num_layers(model) == 2
    for field in ("layer", "mlp", "mlp_out", "attn_out"):
        get_module(model, getattr(spec, field).format(1))
    get_module(model, spec.final_norm)
    down = get_module(model, spec.mlp_out.format(0))
    if type(down).__name__ != "Conv1D":
        assert down.weight.shape == (SMALL["hidden_size"], SMALL["intermediate_size"])


def test_mixture_of_experts_is_refused_clearly():
    model = _model("mixtral", num_local_experts=2, num_experts_per_tok=1)
    with pytest.raises(ModelError, match="mixture-of-experts.*In-context methods"):
        arch_spec(model)
    assert len(decoder_layers(model)) == 2  # layer analysis still finds its layers


def test_decoder_layers_without_a_table_entry():
    model = _model("phi", partial_rotary_factor=0.5)
    assert model.config.model_type not in ARCHITECTURES
    assert decoder_layers(model) is model.model.layers


def test_residual_site_is_the_raw_layer_output_and_needs_no_table(tiny_model):
    from xke.analysis.layers import collect_states

    model, tok = tiny_model.model, tiny_model.tokenizer
    texts, subjects = ["Paris is in France", "Rome is in Italy"], ["Paris", "Rome"]
    n = num_layers(model)
    h, missing = collect_states(model, tok, texts, subjects, list(range(n)), site="residual")
    assert missing == 0 and h.shape[:2] == (2, n)
    ids = tok(texts[0], return_tensors="pt")
    pos = len(tok("Paris", add_special_tokens=True)["input_ids"]) - 1
    with torch.no_grad():
        hs = model(**ids, output_hidden_states=True).hidden_states
    for lay in range(n - 1):  # before the last layer hidden_states are the raw residual stream
        assert torch.allclose(h[0, lay], hs[lay + 1][0, pos].float(), atol=1e-5)
    # hidden_states[-1] is after the final norm: the analysed state is the raw one, which the norm maps to it
    assert not torch.allclose(h[0, n - 1], hs[-1][0, pos].float(), atol=1e-3)
    with torch.no_grad():
        normed = model.model.norm(h[0, n - 1][None, None])[0, 0]
    assert torch.allclose(normed, hs[-1][0, pos].float(), atol=1e-4)
    # the same states for a model type the architecture table does not list
    saved = model.config.model_type
    try:
        model.config.model_type = "not-in-the-table"
        with pytest.raises(ModelError):
            arch_spec(model)
        h2, _ = collect_states(model, tok, texts, subjects, list(range(n)), site="residual")
    finally:
        model.config.model_type = saved
    assert torch.equal(h, h2)
