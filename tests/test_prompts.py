"""Prompt formatting and prompt/target tokenization with a byte-level BPE trained here (en, zh, th)."""

from __future__ import annotations

import itertools

import pytest

from xke.errors import ModelError
from xke.models.prompts import (PLAIN_QA_TEMPLATE, PromptFormatter, answer_separator, encode_prompt,
                                encode_prompt_target)

EN_PLACES = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"),
             ("Germany", "Berlin"), ("Egypt", "Cairo"), ("Peru", "Lima"), ("Kenya", "Nairobi")]
EN_TEMPLATES = ["The capital of {c} is {x}.", "What is the capital of {c}? It is {x}.",
                "{x} is a large city in {c}.", "People in {c} often travel to {x} by train."]
ZH_PLACES = [("法国", "巴黎"), ("日本", "东京"), ("意大利", "罗马"), ("西班牙", "马德里"),
             ("德国", "柏林"), ("埃及", "开罗"), ("秘鲁", "利马"), ("肯尼亚", "内罗毕")]
ZH_TEMPLATES = ["{c}的首都是{x}。", "{c}的首都是哪里？是{x}。", "{x}是{c}的一个大城市。", "{c}的人经常坐火车去{x}。"]
TH_PLACES = [("ฝรั่งเศส", "ปารีส"), ("ญี่ปุ่น", "โตเกียว"), ("อิตาลี", "โรม"), ("สเปน", "มาดริด"),
             ("เยอรมนี", "เบอร์ลิน"), ("อียิปต์", "ไคโร"), ("เปรู", "ลิมา"), ("เคนยา", "ไนโรบี")]
TH_TEMPLATES = ["เมืองหลวงของประเทศ{c}คือ{x}", "เมืองหลวงของ{c}คืออะไร คือ{x}", "{x}เป็นเมืองใหญ่ใน{c}",
                "คนใน{c}มักเดินทางไป{x}โดยรถไฟ"]

CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def _corpus() -> list[str]:
    out = []
    for places, templates in ((EN_PLACES, EN_TEMPLATES), (ZH_PLACES, ZH_TEMPLATES), (TH_PLACES, TH_TEMPLATES)):
        for (c, x), t in itertools.product(places, templates):
            out.append(t.format(c=c, x=x))
    out += [f"Q: {t.format(c=c, x='?')}\nA: {x}" for (c, x), t in itertools.product(EN_PLACES, EN_TEMPLATES[:2])]
    return out * 3  # a few hundred sentences


@pytest.fixture(scope="module")
def bpe_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   clean_up_tokenization_spaces=False)
    assert fast.chat_template is None
    return fast


@pytest.fixture(scope="module")
def chat_tokenizer(bpe_tokenizer):
    import copy

    t = copy.deepcopy(bpe_tokenizer)
    t.chat_template = CHAT_TEMPLATE
    return t


CASES = [  # lang, question, target, expected separator with the plain template
    ("en", "What is the capital of France?", "Paris", " "),
    ("en", "Which city do people in Kenya travel to?", "Nairobi city", " "),
    ("zh", "法国的首都是哪里？", "巴黎", ""),
    ("zh", "日本的首都是哪里？", "东京", ""),
    ("th", "เมืองหลวงของประเทศฝรั่งเศสคืออะไร", "ปารีส", ""),
    ("th", "เมืองหลวงของญี่ปุ่นคืออะไร", "โตเกียว", ""),
]


@pytest.mark.parametrize("lang, question, target, sep", CASES)
def test_target_ids_are_what_the_model_sees(bpe_tokenizer, lang, question, target, sep):
    tok = bpe_tokenizer
    prompt = PromptFormatter(tok).format(question)
    assert prompt == PLAIN_QA_TEMPLATE.format(question=question)
    assert answer_separator(prompt, lang) == sep
    p_ids, t_ids = encode_prompt_target(tok, prompt, target, lang)
    assert p_ids[0] == tok.bos_token_id and p_ids.count(tok.bos_token_id) == 1
    assert tok.bos_token_id not in t_ids and t_ids
    # the model input is prompt_ids + target_ids, and it reads back as prompt + separator + target
    full = p_ids + t_ids
    assert tok.decode(full, skip_special_tokens=True) == prompt + sep + target
    assert tok.decode(t_ids) == sep + target
    assert tok.decode(p_ids, skip_special_tokens=True) == prompt
    assert encode_prompt(tok, prompt) == p_ids
    # here the prompt/answer boundary is a pre-token boundary, so tokenizing the joined text gives the
    # same ids: the scored target ids are exactly the ids that follow the prompt
    joined = tok(prompt + sep + target)["input_ids"]
    assert joined == full and joined[len(p_ids):] == t_ids


@pytest.mark.parametrize("lang, prompt, target", [
    ("zh", "工业革命起源于", "英国"),
    ("th", "เมืองหลวงของประเทศฝรั่งเศสคือ", "ปารีส"),
    ("en", "The Industrial Revolution originated in", "Britain"),
])
def test_cloze_prompts(bpe_tokenizer, lang, prompt, target):
    tok = bpe_tokenizer
    text = PromptFormatter(tok).format(prompt, style="cloze")
    assert text == prompt  # a base model reads a cloze statement as is
    p_ids, t_ids = encode_prompt_target(tok, text, target, lang)
    sep = " " if lang == "en" else ""
    assert tok.decode(p_ids + t_ids, skip_special_tokens=True) == prompt + sep + target
    assert tok.decode(t_ids) == sep + target


def test_no_hard_coded_space(bpe_tokenizer):
    tok = bpe_tokenizer
    # a template that already ends with a space: nothing more is added, even in English
    fmt = PromptFormatter(tok, mode="plain", plain_template="Question: {question}\nAnswer: ")
    prompt = fmt.format("What is the capital of Italy?")
    assert answer_separator(prompt, "en") == ""
    p_ids, t_ids = encode_prompt_target(tok, prompt, "Rome", "en")
    assert tok.decode(p_ids + t_ids, skip_special_tokens=True) == prompt + "Rome"
    # a prompt ending in a newline: no space either
    assert answer_separator("Q: x\nA:\n", "en") == ""
    assert answer_separator("Q: x\nA:", "zh") == "" and answer_separator("Q: x\nA:", "th") == ""
    assert answer_separator("Q: x\nA:", "de") == " "


def test_formatter_chat_template_used_when_present(chat_tokenizer, bpe_tokenizer):
    fmt = PromptFormatter(chat_tokenizer)
    assert fmt.use_chat
    text = fmt.format("法国的首都是哪里？")
    expected = chat_tokenizer.apply_chat_template([{"role": "user", "content": "法国的首都是哪里？"}],
                                                  tokenize=False, add_generation_prompt=True)
    assert text == expected == "<s><|user|>\n法国的首都是哪里？\n<|assistant|>\n"
    # the rendered chat prompt already holds BOS: no second one
    p_ids, t_ids = encode_prompt_target(chat_tokenizer, text, "巴黎", "zh")
    assert p_ids.count(chat_tokenizer.bos_token_id) == 1 and p_ids[0] == chat_tokenizer.bos_token_id
    assert chat_tokenizer.decode(p_ids + t_ids) == text + "巴黎"
    # English after a template ending in a newline: no space is inserted
    p_ids, t_ids = encode_prompt_target(chat_tokenizer, fmt.format("What is the capital of France?"), "Paris", "en")
    assert chat_tokenizer.decode(t_ids) == "Paris"
    # a system message goes first
    sys_text = PromptFormatter(chat_tokenizer, system="Answer briefly.").format("Hi?")
    assert sys_text.startswith("<s><|system|>\nAnswer briefly.\n<|user|>\nHi?\n")
    # override: plain mode on a chat tokenizer
    assert PromptFormatter(chat_tokenizer, mode="plain").format("Hi?") == "Q: Hi?\nA:"
    # base tokenizer: plain QA template
    plain = PromptFormatter(bpe_tokenizer)
    assert not plain.use_chat and plain.format("Hi?") == "Q: Hi?\nA:"


def test_chat_mode_without_template_is_a_clear_error(bpe_tokenizer):
    with pytest.raises(ModelError, match="no chat template"):
        PromptFormatter(bpe_tokenizer, mode="chat")
    with pytest.raises(ModelError, match="unknown template mode"):
        PromptFormatter(bpe_tokenizer, mode="fancy")
