"""The toy world's tokenizer: byte-level BPE trained on the world's text.

Each CJK character and each digit is its own pre-token, so
``tokenize(prompt + answer) == tokenize(prompt) + tokenize(answer)`` for
Chinese prompts and answers (no token spans the boundary). Wrapped as a
:class:`~transformers.PreTrainedTokenizerFast` with xke's special tokens and
chat template (:mod:`xke.models.tiny`); ``add_special_tokens=True`` prepends
``<|bos|>``.
"""

from __future__ import annotations

from typing import Iterable

from ..models.tiny import CHAT_TEMPLATE, SPECIAL_TOKENS

#: CJK ideographs, CJK punctuation and full-width forms: each character a pre-token
CJK_PATTERN = r"[\u2E80-\u2FFF\u3000-\u303F\u3040-\u30FF\u3400-\u4DBF\u4E00-\u9FFF\uF900-\uFAFF\uFF00-\uFFEF]"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """Train the world tokenizer on ``texts``; deterministic for the same texts."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CJK_PATTERN), behavior="isolated"),
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
                                  min_frequency=2)
    tok.train_from_iterator(list(texts), trainer=trainer)
    bos_id = tok.token_to_id("<|bos|>")
    tok.post_processor = processors.TemplateProcessing(single="<|bos|> $A", pair="<|bos|> $A $B",
                                                       special_tokens=[("<|bos|>", bos_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", bos_token="<|bos|>",
                                   eos_token="<|eos|>", additional_special_tokens=SPECIAL_TOKENS[3:])
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 1024
    return fast
