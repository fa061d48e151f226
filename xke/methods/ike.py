"""IKE (in-context knowledge editing): demonstrations, then the new fact, then the query.

The prompt is :func:`xke.prompts.ike_prompt`. Each demonstration is built from a
training pair (a pool of edit cases) and is one of three kinds, in rotation by rank:

- copy:   the pool fact, then the same question with its new answer;
- update: the pool fact, then a paraphrase with its new answer;
- retain: the pool fact, then an unrelated question with its own answer;

where the pool fact is in the edit's (source) language and the questions are
in the query's language (``demo_query_lang: query``; ``source`` keeps them in
the source language). The ``k`` pool facts most similar to the new fact
(sentence-embedding cosine with the dense retriever's encoder; BM25 when no
encoder is configured) are used, least similar first. Then the new fact in
the source language and the query.

The new fact carries the source-language answer only: the target-language
answer of the edited case never enters the context (Bi-ZsRE's cross-lingual
IKE leaked it). The pool never contains the edited case itself.

Pool: ``pool`` (a JSONL of EditCase; ``pool_split`` keeps the cases whose
``meta.split`` is that split). A model's provider may fill both (the toy
world gives its train-split cases).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from ..config import ConfigError
from ..data.schema import EditCase, EditRequest, Query
from ..prompts import ike_demonstration, ike_fact, ike_prompt
from .base import register_method
from .context import ContextConfig, ContextMethod

DEMO_KINDS = ("copy", "update", "retain")


@dataclass
class IKEConfig(ContextConfig):
    #: number of demonstrations (EasyEdit uses 16)
    k: int = 8
    #: JSONL of EditCase training pairs; null = none (then k must be 0)
    pool: str | None = None
    #: keep only the pool cases whose ``meta.split`` is this (e.g. ``train``); null = all
    pool_split: str | None = None
    #: at most this many pool cases are used (first ones in file order); null = all
    pool_limit: int | None = 2000
    #: language of the demonstrations' prompts/answers: the query's, or the source (edit) language
    demo_query_lang: Literal["query", "source"] = "query"

    def validate(self) -> None:
        super().validate()
        if self.k < 0:
            raise ConfigError(f"k must be ≥ 0, got {self.k}")


@register_method
class IKE(ContextMethod):
    name = "ike"
    config_class = IKEConfig

    def __init__(self, model, tokenizer, formatter, config=None):
        super().__init__(model, tokenizer, formatter, config)
        self._pool: list[EditCase] | None = None
        self._pool_vecs: dict[str, tuple[list[int], np.ndarray | object]] = {}
        self._demo_cache: dict[tuple, list[str]] = {}

    # --- pool -------------------------------------------------------------------------
    def pool(self) -> list[EditCase]:
        if self._pool is None:
            from ..data.loaders import read_jsonl

            cfg = self.config
            if cfg.pool:
                cases = [c for c in read_jsonl(cfg.pool)
                         if cfg.pool_split is None or c.meta.get("split") == cfg.pool_split]
            elif cfg.k == 0:
                cases = []
            else:
                raise ConfigError("IKE needs a pool of training pairs for its demonstrations: set pool "
                                  "(a JSONL of edit cases; a toy-world model gets its world's train split), "
                                  "or set k: 0")
            if cfg.pool_limit is not None:
                cases = cases[:cfg.pool_limit]
            self._pool = cases
        return self._pool

    def _ranked(self, src_lang: str, fact: str, exclude: set[str]) -> list[int]:
        """Pool indices ordered by similarity of their source-language fact to ``fact``, best first."""
        pool = self.pool()
        if src_lang not in self._pool_vecs:
            idx = [i for i, c in enumerate(pool) if src_lang in c.views]
            views = [pool[i].views[src_lang] for i in idx]
            texts = [ike_fact(v.prompt, v.target_new, src_lang) for v in views]
            enc = self.encoder()
            if enc is not None:
                self._pool_vecs[src_lang] = (idx, ("dense", enc, enc.encode(texts) if texts else None))
            else:
                import bm25s

                from ..memory.retrievers import bm25_tokens

                bm = bm25s.BM25()
                if texts:
                    bm.index([bm25_tokens(t) or ["<empty>"] for t in texts], show_progress=False)
                self._pool_vecs[src_lang] = (idx, ("bm25", bm, None))
        idx, (kind, obj, vecs) = self._pool_vecs[src_lang]
        if not idx:
            return []
        if kind == "dense":
            sims = vecs @ obj.encode([fact])[0]
        else:
            from ..memory.retrievers import bm25_tokens

            sims = obj.get_scores(bm25_tokens(fact) or ["<empty>"])
        order = np.argsort(-np.asarray(sims), kind="stable")
        return [idx[j] for j in order if pool[idx[j]].case_id not in exclude]

    def demonstrations(self, edit: EditRequest, query: Query) -> list[str]:
        """The demonstrations for an edit (source language ``edit.lang``) and a query language."""
        k = self.config.k
        if k == 0:
            return []
        t_lang = query.lang if self.config.demo_query_lang == "query" else edit.lang
        key = (edit.lang, edit.prompt, edit.target_new, t_lang, edit.case_id)
        if key in self._demo_cache:
            return self._demo_cache[key]
        exclude = {edit.case_id} if edit.case_id else set()
        demos: list[str] = []
        pool = self.pool()
        for i in self._ranked(edit.lang, ike_fact(edit.prompt, edit.target_new, edit.lang), exclude):
            c = pool[i]
            if t_lang not in c.views:
                continue
            s, t = c.views[edit.lang], c.views[t_lang]
            kind = DEMO_KINDS[len(demos) % 3]
            if kind == "update" and not t.paraphrases:
                kind = "copy"
            if kind == "retain" and not (t.locality_prompt and t.locality_answer):
                kind = "copy"
            if kind == "copy":
                q = ike_fact(t.prompt, t.target_new, t_lang)
            elif kind == "update":
                q = ike_fact(t.paraphrases[0], t.target_new, t_lang)
            else:
                q = ike_fact(t.locality_prompt, t.locality_answer, t_lang)
            demos.append(ike_demonstration(ike_fact(s.prompt, s.target_new, edit.lang), q))
            if len(demos) == k:
                break
        demos.reverse()  # most similar nearest to the query
        if len(self._demo_cache) > 5000:
            self._demo_cache.clear()
        self._demo_cache[key] = demos
        return demos

    def render(self, edits: Sequence[EditRequest], query: Query) -> str:
        demos = self.demonstrations(edits[0], query)
        return ike_prompt(demos, [ike_fact(e.prompt, e.target_new, e.lang) for e in edits], query.prompt)
