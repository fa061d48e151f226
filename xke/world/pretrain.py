"""Pretraining the toy world's Llama on CPU: a plain torch loop.

Examples (lists of ``(text, trained)`` segments) are tokenized segment by
segment, packed whole into fixed-length rows (no example is cut; the rest of
a row is padding with no loss), and trained with AdamW and a cosine schedule.
Loss is on trained segments only (answers of questions, whole statements).
Evaluation is greedy exact match computed in one teacher-forced pass: an
answer counts when the argmax at every answer position is the answer token
and the argmax after the answer is ``<|end|>``, which is what greedy
decoding from the prompt would produce.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..models.prompts import answer_separator


def build_model(tok, *, d_model: int, n_layers: int, n_heads: int, d_ff: int, max_len: int, seed: int):
    """A Llama-architecture causal LM from a config, sized for the tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    end_id = tok.convert_tokens_to_ids("<|end|>")
    config = LlamaConfig(vocab_size=len(tok), hidden_size=d_model, intermediate_size=d_ff,
                         num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_heads,
                         max_position_embeddings=max_len, bos_token_id=tok.bos_token_id,
                         eos_token_id=[tok.eos_token_id, end_id], pad_token_id=tok.pad_token_id,
                         tie_word_embeddings=False, rope_theta=10000.0, attention_bias=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = [tok.eos_token_id, end_id]
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    return model


class SegmentEncoder:
    """Tokenizes segments with a cache (the same prompt texts recur every epoch)."""

    def __init__(self, tok):
        self.tok = tok
        self.cache: dict[str, list[int]] = {}

    def ids(self, text: str) -> list[int]:
        got = self.cache.get(text)
        if got is None:
            got = self.tok(text, add_special_tokens=False)["input_ids"]
            if len(self.cache) < 400_000:
                self.cache[text] = got
        return got

    def example(self, segs) -> tuple[list[int], list[bool]]:
        ids: list[int] = []
        mask: list[bool] = []
        for text, trained in segs:
            t = self.ids(text)
            ids += t
            mask += [trained] * len(t)
        return ids, mask


def pack(examples: list[tuple[list[int], list[bool]]], seq_len: int, pad_id: int):
    """Pack whole examples into rows of ``seq_len`` tokens; returns (input_ids, labels) tensors."""
    rows, labs = [], []
    cur, cur_l = [], []
    for ids, mask in examples:
        ids, mask = ids[:seq_len], mask[:seq_len]
        if len(cur) + len(ids) > seq_len:
            rows.append(cur)
            labs.append(cur_l)
            cur, cur_l = [], []
        cur = cur + ids
        cur_l = cur_l + [i if m else -100 for i, m in zip(ids, mask)]
    if cur:
        rows.append(cur)
        labs.append(cur_l)
    x = torch.full((len(rows), seq_len), pad_id, dtype=torch.long)
    y = torch.full((len(rows), seq_len), -100, dtype=torch.long)
    for i, (r, l) in enumerate(zip(rows, labs)):
        x[i, :len(r)] = torch.tensor(r)
        y[i, :len(l)] = torch.tensor(l)
    return x, y


def train(model, tok, epoch_fn: Callable[[int], list], *, epochs: int, seq_len: int, batch_rows: int, lr: float,
          warmup: float = 0.05, weight_decay: float = 0.01, min_lr_ratio: float = 0.05, seed: int = 0,
          log: Callable[[str], None] | None = None) -> dict:
    """Train ``model`` for ``epochs`` epochs of ``epoch_fn(epoch)`` examples. Returns stats."""
    enc = SegmentEncoder(tok)
    pad_id = tok.pad_token_id
    # the number of steps depends on packing; estimate from epoch 0 (epochs are of similar size)
    first = [enc.example(e) for e in epoch_fn(0)]
    x0, _ = pack(first, seq_len, pad_id)
    steps_per_epoch = math.ceil(len(x0) / batch_rows)
    total = steps_per_epoch * epochs
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.dim() < 2 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98), eps=1e-8)
    n_warm = max(1, int(total * warmup))

    def lr_at(step):
        if step < n_warm:
            return lr * (step + 1) / n_warm
        prog = min(1.0, (step - n_warm) / max(1, total - n_warm))
        return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * prog)))

    gen = torch.Generator().manual_seed(seed)
    model.train()
    step = 0
    t0, w0 = time.process_time(), time.time()
    stats = {"steps": 0, "tokens": 0, "loss": []}
    for ep in range(epochs):
        exs = first if ep == 0 else [enc.example(e) for e in epoch_fn(ep)]
        x, y = pack(exs, seq_len, pad_id)
        perm = torch.randperm(len(x), generator=gen)
        x, y = x[perm], y[perm]
        ep_loss, ep_n = 0.0, 0
        for b in range(0, len(x), batch_rows):
            if step >= total:
                break
            xb, yb = x[b:b + batch_rows], y[b:b + batch_rows]
            # trim padding columns shared by the whole batch
            used = int((xb != pad_id).sum(1).max())
            xb, yb = xb[:, :used], yb[:, :used]
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            logits = model(input_ids=xb).logits
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), yb[:, 1:].reshape(-1),
                                   ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            ep_loss += loss.item()
            ep_n += 1
            stats["tokens"] += int(xb.numel())
        stats["loss"].append(round(ep_loss / max(1, ep_n), 4))
        if log:
            wall = time.time() - w0
            eta = wall / max(1, step) * (total - step)
            log(f"epoch {ep + 1}/{epochs} loss {stats['loss'][-1]:.4f} step {step}/{total} "
                f"cpu {time.process_time() - t0:.0f}s wall {wall:.0f}s eta {_duration(eta)}")
    stats["steps"] = step
    model.eval()
    return stats


def _duration(seconds: float) -> str:
    """``1m05s`` / ``42s``: a short human duration."""
    s = int(round(seconds))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


@torch.no_grad()
def exact_match(model, tok, items: Sequence[tuple[str, str, str]], batch_size: int = 128) -> list[bool]:
    """Greedy exact match of ``(rendered prompt, answer, lang)`` items, in one teacher-forced pass each:
    correct when the argmax predicts every answer token and then ``<|end|>``."""
    end_id = tok.convert_tokens_to_ids("<|end|>")
    seqs = []
    for prompt, ans, lang in items:
        p = tok(prompt, add_special_tokens=not prompt.startswith(tok.bos_token))["input_ids"]
        a = tok(answer_separator(prompt, lang) + ans, add_special_tokens=False)["input_ids"] + [end_id]
        seqs.append((p, a))
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]) + len(seqs[i][1]))
    out = [False] * len(seqs)
    model.eval()
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        L = max(len(seqs[i][0]) + len(seqs[i][1]) for i in idx)
        x = torch.full((len(idx), L), tok.pad_token_id, dtype=torch.long)
        att = torch.zeros((len(idx), L), dtype=torch.long)
        for r, i in enumerate(idx):
            s = seqs[i][0] + seqs[i][1]
            x[r, :len(s)] = torch.tensor(s)
            att[r, :len(s)] = 1
        pred = model(input_ids=x, attention_mask=att).logits.argmax(-1)
        for r, i in enumerate(idx):
            p, a = seqs[i]
            got = pred[r, len(p) - 1:len(p) - 1 + len(a)].tolist()
            out[i] = got == a
    return out


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
