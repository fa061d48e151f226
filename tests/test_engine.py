"""The batched evaluation engine gives what one-at-a-time forward passes give."""

from __future__ import annotations

import torch

from xke.eval.engine import Engine, _batches

PROMPTS = ["Q: Where was Ada Lovelace born?\nA:", "Q: 爱因斯坦出生在哪里？\nA:", "x",
           "Q: a much longer question with many words in it, to force padding of the others?\nA:",
           "<|bos|><|user|>Wer ist das?\n<|assistant|>"]
TARGETS = [" London", "乌尔姆", " y", " something rather long here", "Niemand"]


def _items(tok):
    return [(tok(p, add_special_tokens=not p.startswith("<|bos|>"))["input_ids"],
             tok(t, add_special_tokens=False)["input_ids"]) for p, t in zip(PROMPTS, TARGETS)]


def test_batches_respect_budget_and_cover_all():
    lengths = [5, 50, 7, 3, 20, 20, 1]
    bs = _batches(lengths, budget=60, max_rows=3)
    assert sorted(i for b in bs for i in b) == list(range(len(lengths)))
    for b in bs:
        assert len(b) <= 3
        assert max(lengths[i] for i in b) * len(b) <= 60 or len(b) == 1


def test_score_equals_unbatched_forward(tiny_model):
    m, tok = tiny_model.model, tiny_model.tokenizer
    items = _items(tok)
    for budget in (10_000, 40):  # one batch / several batches
        got = Engine(m, tok, token_budget=budget).score(items)
        for (p, t), r in zip(items, got):
            with torch.no_grad():
                lg = m(torch.tensor([p + t])).logits[0]
            assert r == lg[len(p) - 1:len(p) + len(t) - 1].argmax(-1).tolist()


def test_score_empty_target(tiny_model):
    m, tok = tiny_model.model, tiny_model.tokenizer
    assert Engine(m, tok).score([(tok("abc")["input_ids"], [])]) == [[]]


def test_generate_equals_hf_greedy(tiny_model):
    m, tok = tiny_model.model, tiny_model.tokenizer
    prompts = [p for p, _ in _items(tok)]
    eng = Engine(m, tok, max_new_tokens=6, stop_on_newline=False)
    outs = eng.generate(prompts)
    stop = eng.stop_ids()
    for p, o in zip(prompts, outs):
        ref = m.generate(torch.tensor([p]), max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id,
                         attention_mask=torch.ones(1, len(p), dtype=torch.long))[0, len(p):].tolist()
        cut = next((i for i, t in enumerate(ref) if t in stop), len(ref))
        assert o.ids == ref[:cut]
        assert o.text == tok.decode(ref[:cut], skip_special_tokens=True).strip()


class _Scripted(torch.nn.Module):
    """A fake LM that emits a fixed token sequence (by step), to test the stop rules."""

    def __init__(self, script, vocab):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.script, self.vocab, self.calls = script, vocab, 0

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False,
                logits_to_keep=None, **kw):
        B = input_ids.shape[0]
        step = 0 if past_key_values is None else past_key_values + 1
        logits = torch.zeros(B, 1, self.vocab)
        for r in range(B):
            logits[r, 0, self.script[r][min(step, len(self.script[r]) - 1)]] = 1.0
        return type("O", (), {"logits": logits, "past_key_values": step})()


def test_generate_stops_at_newline_eos_and_end_token(tiny_model):
    tok = tiny_model.tokenizer
    nl = tok("\n", add_special_tokens=False)["input_ids"][0]
    a, b = tok("a", add_special_tokens=False)["input_ids"][0], tok("b", add_special_tokens=False)["input_ids"][0]
    end = tok.convert_tokens_to_ids("<|end|>")
    script = [[a, b, nl, a, a], [nl, a, nl, b, b], [a, tok.eos_token_id, b, b, b], [b, end, a, a, a]]
    eng = Engine(_Scripted(script, len(tok)), tok, max_new_tokens=5)
    outs = eng.generate([[1, 2], [1, 2], [1, 2], [1, 2]])  # equal lengths keep the batch order
    assert [o.text for o in outs] == ["ab", "a", "a", "b"]
    assert outs[0].ids == [a, b] and outs[1].ids == [a]


def test_generation_uses_the_current_cache_argument(tiny_model):
    """No deprecated ``past_key_values`` call (transformers 5 renamed it ``cache``): no warning, same answers."""
    import inspect
    import warnings

    from xke.models.loading import cache_argument

    m, tok = tiny_model.model, tiny_model.tokenizer
    assert cache_argument(m) == ("cache" if "cache" in inspect.signature(m.forward).parameters else "past_key_values")
    prompts = [p for p, _ in _items(tok)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = Engine(m, tok, max_new_tokens=4, stop_on_newline=False).generate(prompts)
    assert not [w for w in caught if "past_key_values" in str(w.message)]
    for p, g in zip(prompts, got):  # the cached loop gives the uncached greedy answer
        ids = list(p)
        with torch.no_grad():
            for _ in range(len(g.ids)):
                ids.append(int(m(torch.tensor([ids])).logits[0, -1].argmax()))
        assert g.ids == ids[len(p):]
