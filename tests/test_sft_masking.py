"""XE-IT (SFT): only answer tokens carry loss, with the model's own chat template."""

from __future__ import annotations

import warnings

import pytest

from xke.methods.xkde import xkde_prompt
from xke.train.xeit import XeitConfig, build_sft_trainer, check_lengths, load_for_training, to_sft_records

ROWS = [
    {"messages": [{"role": "user", "content": xkde_prompt([("Where was Bob born?", "Paris")], "鲍勃出生在哪里？", "zh")},
                  {"role": "assistant", "content": "巴黎"}]},
    {"messages": [{"role": "user", "content": "Where was Bob born?"}, {"role": "assistant", "content": "London"}]},
]


def _labels(trainer, n):
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(n)])
    return batch["input_ids"], batch["labels"]


@pytest.fixture
def tiny():
    return load_for_training("tiny-llama")


@pytest.mark.slow
def test_assistant_only_loss(tiny, tmp_path):
    model, tok, _ = tiny
    trainer, mode = build_sft_trainer(model, tok, ROWS, None, XeitConfig(max_steps=1, max_length=512), tmp_path)
    assert mode == "assistant_only"
    ids, labels = _labels(trainer, 2)
    for i, row in enumerate(ROWS):
        kept = ids[i][labels[i] != -100]
        # exactly the answer and the template's end-of-turn token carry loss
        assert tok.decode(kept) == row["messages"][1]["content"] + "<|end|>"
        full = tok.decode(ids[i][ids[i] != tok.pad_token_id])
        assert "[Updated Information]" in full or i == 1
    trainer.train()  # one step runs


def test_completion_only_loss_without_generation_markers(tiny, tmp_path):
    model, tok, _ = tiny
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}\n"
                         "{% else %}<|assistant|>{{ m['content'] }}<|end|>\n{% endif %}{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    recs, mode = to_sft_records(ROWS, tok)
    assert mode == "completion_only" and set(recs[0]) == {"prompt", "completion", "chat_template_kwargs"}
    # TRL renders each record with these: Qwen3-style reasoning off unless asked for
    assert recs[0]["chat_template_kwargs"] == {"enable_thinking": False}
    assert to_sft_records(ROWS, tok, thinking=True)[0][0]["chat_template_kwargs"] == {"enable_thinking": True}
    trainer, mode = build_sft_trainer(model, tok, ROWS, None, XeitConfig(max_steps=1, max_length=512), tmp_path)
    ids, labels = _labels(trainer, 2)
    for i, row in enumerate(ROWS):
        kept = tok.decode(ids[i][labels[i] != -100])
        assert kept.startswith(row["messages"][1]["content"])
        assert "<|user|>" not in kept and "Updated" not in kept and "Where" not in kept


def test_overlength_rows_counted_and_dropped(tiny):
    _, tok, _ = tiny
    long_row = {"messages": [{"role": "user", "content": "x " * 400}, {"role": "assistant", "content": "y"}]}
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        kept, info = check_lengths(ROWS + [long_row], tok, 256, "drop")
    assert info["over_max_length"] == 1 and len(kept) == 2
    assert any("1 of 3 rows are longer than max_length=256" in str(x.message) for x in w)
    from xke.errors import ConfigError

    with pytest.raises(ConfigError):
        check_lengths([long_row], tok, 256, "error")


def test_no_chat_template_is_a_clear_error(tiny):
    _, tok, _ = tiny
    tok.chat_template = None
    from xke.errors import XkeError

    with pytest.raises(XkeError, match="chat template"):
        to_sft_records(ROWS, tok)


@pytest.mark.slow
def test_sampling_strategy_option(tiny, tmp_path):
    import torch

    from xke.config import from_dict
    from xke.errors import ConfigError

    model, tok, _ = tiny
    cfg = XeitConfig(max_steps=1, max_length=512, learning_rate=1e-2, warmup_steps=0,
                     train_sampling_strategy="group_by_length")
    trainer, _ = build_sft_trainer(model, tok, ROWS, None, cfg, tmp_path)
    assert trainer.args.train_sampling_strategy == "group_by_length"
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()  # the length-grouped sampler runs; the weights moved
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    with pytest.raises(ConfigError, match="train_sampling_strategy"):
        from_dict(XeitConfig, {"train_sampling_strategy": "shuffled"})
