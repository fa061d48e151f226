"""Batched scoring and greedy generation for evaluation.

Two operations, both batched with left padding, attention masks, explicit
position ids and :func:`torch.inference_mode`:

- :meth:`Engine.score`: teacher forcing. For each ``(prompt_ids, target_ids)``
  the model reads ``prompt_ids + target_ids``; the result is the argmax token
  at every position that predicts a target token (one id per target token).
  Because sequences are left padded, every target sits at the right end of
  the batch, so only the last ``max_target + 1`` positions go through the LM
  head (``logits_to_keep``).
- :meth:`Engine.generate`: greedy decoding with a KV cache. A row stops at
  EOS, at the chat template's end-of-turn token, or at a newline once the
  answer has started. Returns the generated ids (without the stop token) and
  the decoded text.

Items are sorted by length and packed into batches under a token budget
(``padded length x rows``), so short prompts are not padded to the longest
one of the whole call. Results come back in input order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..models.loading import cache_argument

#: end-of-turn markers of common chat templates (used as stop tokens when present in the vocabulary)
END_TOKENS = ("<|end|>", "<|im_end|>", "<|eot_id|>", "<|endoftext|>", "</s>", "<end_of_turn>", "<|eos|>")


@dataclass
class Generation:
    """A greedy answer: generated token ids (stop token excluded) and their decoded text."""

    ids: list[int]
    text: str


def _batches(lengths: Sequence[int], budget: int, max_rows: int) -> list[list[int]]:
    """Indices grouped into batches, sorted by length (descending), each with rows * max_len <= budget."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    out: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for i in order:
        L = max(1, lengths[i])
        new_max = max(cur_max, L)
        if cur and (new_max * (len(cur) + 1) > budget or len(cur) >= max_rows):
            out.append(cur)
            cur, new_max = [], L
        cur.append(i)
        cur_max = new_max
    if cur:
        out.append(cur)
    return out


class Engine:
    """Batched teacher-forced scoring and greedy generation on one model.

    ``token_budget`` bounds ``rows x padded length`` of one forward batch;
    ``max_rows`` bounds the rows.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, *, token_budget: int = 8192, max_rows: int = 256,
                 max_new_tokens: int = 16, stop_on_newline: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.token_budget = int(token_budget)
        self.max_rows = int(max_rows)
        self.max_new_tokens = int(max_new_tokens)
        self.stop_on_newline = stop_on_newline
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)
        self._stop_ids: set[int] | None = None
        self._newline_ids: set[int] | None = None
        self._accepts_keep: bool | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # --- stop tokens -------------------------------------------------------------
    def stop_ids(self) -> set[int]:
        """EOS and end-of-turn token ids."""
        if self._stop_ids is None:
            tok = self.tokenizer
            ids: set[int] = set()
            eos = tok.eos_token_id
            if isinstance(eos, int):
                ids.add(eos)
            elif isinstance(eos, (list, tuple)):
                ids.update(int(e) for e in eos)
            gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
            if isinstance(gen_eos, int):
                ids.add(gen_eos)
            elif isinstance(gen_eos, (list, tuple)):
                ids.update(int(e) for e in gen_eos)
            vocab = tok.get_vocab()
            for t in END_TOKENS:
                if t in vocab:
                    ids.add(int(vocab[t]))
            self._stop_ids = ids
        return self._stop_ids

    def newline_ids(self) -> set[int]:
        """Ids of tokens whose text contains a newline."""
        if self._newline_ids is None:
            tok = self.tokenizer
            n = len(tok)
            texts = tok.batch_decode([[i] for i in range(n)], skip_special_tokens=False,
                                     clean_up_tokenization_spaces=False)
            self._newline_ids = {i for i, t in enumerate(texts) if "\n" in t}
        return self._newline_ids

    # --- forward -------------------------------------------------------------------
    def _pad_left(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        L = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), L), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), L), dtype=torch.long)
        for r, s in enumerate(seqs):
            if s:
                ids[r, L - len(s):] = torch.tensor(s, dtype=torch.long)
                mask[r, L - len(s):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        dev = self.device
        return ids.to(dev), mask.to(dev), pos.to(dev)

    def _forward(self, keep: int | None = None, **kw):
        if keep is not None and self._accepts_keep is not False:
            try:
                out = self.model(logits_to_keep=keep, **kw)
                self._accepts_keep = True
                return out
            except TypeError:
                self._accepts_keep = False
        return self.model(**kw)

    @torch.inference_mode()
    def score(self, items: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[list[int]]:
        """Teacher-forced argmax ids at the target positions of each ``(prompt_ids, target_ids)``."""
        results: list[list[int] | None] = [None] * len(items)
        lengths = [len(p) + len(t) for p, t in items]
        for batch in _batches(lengths, self.token_budget, self.max_rows):
            seqs = [list(items[i][0]) + list(items[i][1]) for i in batch]
            tlens = [len(items[i][1]) for i in batch]
            tmax = max(tlens)
            if tmax == 0:
                for i in batch:
                    results[i] = []
                continue
            ids, mask, pos = self._pad_left(seqs)
            out = self._forward(keep=tmax + 1, input_ids=ids, attention_mask=mask, position_ids=pos,
                                use_cache=False)
            logits = out.logits
            # logits[:, j] predicts the token after position (L - K + j), K = logits.shape[1]
            K = logits.shape[1]
            pred = logits.argmax(-1).cpu()
            for r, i in enumerate(batch):
                T = tlens[r]
                if T == 0:
                    results[i] = []
                    continue
                # positions predicting the last T tokens: L-T-1 .. L-2  -> in kept window: K-T-1 .. K-2
                results[i] = pred[r, K - T - 1:K - 1].tolist()
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int | None = None,
                 on_token: Callable[[int, int], None] | None = None) -> list[Generation]:
        """Greedy answers to tokenized prompts (see module docstring for the stop rules).

        ``on_token(i, token_id)``, when given, is called for each token kept for prompt ``i`` as soon as it is
        generated (for streaming); the returned :class:`Generation` is the same either way.
        """
        max_new = self.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        results: list[Generation | None] = [None] * len(prompts)
        stop = self.stop_ids()
        newline = self.newline_ids() if self.stop_on_newline else set()
        lengths = [len(p) + max_new for p in prompts]
        tok = self.tokenizer
        for batch in _batches(lengths, self.token_budget, self.max_rows):
            seqs = [list(prompts[i]) for i in batch]
            ids, mask, pos = self._pad_left(seqs)
            B = len(batch)
            gen: list[list[int]] = [[] for _ in range(B)]
            done = [max_new <= 0] * B
            started = [False] * B
            past = None
            cur_ids, cur_pos = ids, pos
            cache_arg = cache_argument(self.model)
            for step in range(max_new):
                out = self._forward(keep=1, input_ids=cur_ids, attention_mask=mask, position_ids=cur_pos,
                                    use_cache=True, **{cache_arg: past})
                past = getattr(out, cache_arg)
                nxt = out.logits[:, -1].argmax(-1)
                nl = nxt.tolist()
                for r, t in enumerate(nl):
                    if done[r]:
                        continue
                    if t in stop:
                        done[r] = True
                        continue
                    if t in newline:
                        if started[r]:
                            done[r] = True
                            continue
                        gen[r].append(t)  # leading newline before the answer starts
                        if on_token is not None:
                            on_token(batch[r], t)
                        continue
                    gen[r].append(t)
                    started[r] = True
                    if on_token is not None:
                        on_token(batch[r], t)
                if all(done) or step == max_new - 1:
                    break
                nxt = torch.where(torch.tensor(done, device=nxt.device), torch.full_like(nxt, self.pad_id), nxt)
                cur_ids = nxt[:, None]
                cur_pos = cur_pos[:, -1:] + 1
                mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=mask.device)], dim=1)
            texts = tok.batch_decode(gen, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            for r, i in enumerate(batch):
                # drop leading newline tokens from the answer ids; text is stripped
                g = gen[r]
                k = 0
                while k < len(g) and g[k] in newline:
                    k += 1
                results[i] = Generation(ids=g[k:], text=texts[r].strip())
        return results  # type: ignore[return-value]
