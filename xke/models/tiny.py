"""Built-in tiny models for smoke tests, built from configs (random weights).

They are saved in Hugging Face format under the xke cache and loaded back
with ``from_pretrained``, so every code path treats them like a downloaded
model. The tokenizer is a byte-level BPE with no merges (256 byte tokens plus
specials) and a chat template.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..paths import cache_dir

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]

#: a chat template with generation markers, so TRL can mask everything but assistant turns
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}<|system|>{{ m['content'] }}\n"
    "{% elif m['role'] == 'user' %}<|user|>{{ m['content'] }}\n"
    "{% else %}<|assistant|>{% generation %}{{ m['content'] }}<|end|>{% endgeneration %}\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

TINY_CONFIGS: dict[str, dict] = {
    "tiny-llama": dict(model_type="llama", hidden_size=64, intermediate_size=172, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512),
    "tiny-qwen2": dict(model_type="qwen2", hidden_size=64, intermediate_size=172, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512),
    "tiny-mistral": dict(model_type="mistral", hidden_size=64, intermediate_size=172, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512),
    "tiny-gpt2": dict(model_type="gpt2", n_embd=64, n_layer=4, n_head=4, n_positions=512),
    "tiny-gpt-neox": dict(model_type="gpt_neox", hidden_size=64, intermediate_size=256, num_hidden_layers=4,
                          num_attention_heads=4, max_position_embeddings=512),
}


def build_byte_tokenizer(chat_template: str | None = CHAT_TEMPLATE):
    """A byte-level BPE tokenizer with the 256 byte symbols and xke's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", bos_token="<|bos|>",
                                   eos_token="<|eos|>", additional_special_tokens=SPECIAL_TOKENS[3:])
    if chat_template:
        fast.chat_template = chat_template
    return fast


def build_tiny_model(name: str, out_dir: str | Path | None = None, seed: int = 0) -> Path:
    """Build (or reuse) the built-in tiny model ``name`` and return its directory."""
    if name not in TINY_CONFIGS:
        raise KeyError(name)
    out = Path(out_dir) if out_dir else cache_dir("tiny", f"{name}-s{seed}")
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    cfg = dict(TINY_CONFIGS[name])
    save_random_model(cfg.pop("model_type"), build_byte_tokenizer(), out, seed=seed, tie_word_embeddings=False,
                      **cfg)
    (out / "xke_builtin.json").write_text(json.dumps({"name": name, "seed": seed}))
    return out


def save_random_model(model_type: str, tok, out: Path, *, seed: int = 0, **config) -> Path:
    """A random-weight causal LM of ``model_type`` sized for ``tok`` (its special token ids), saved with
    ``tok`` to ``out`` in Hugging Face format."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(model_type, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **config)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
