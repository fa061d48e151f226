"""What the in-context methods (IKE, LTE, X-KDE inference) share.

They never change weights: the model reads edit descriptors in its prompt.

- ``mode: gold`` -- :meth:`ContextMethod.apply` remembers the requests by
  case id, and a query of that case gets its own edit in context (the papers'
  single-edit tables; the released X-KDE evaluation). With ``--edit-lang mix``
  a case has two requests: the one in the query's language is used when
  present, else the first.
- ``mode: retrieve`` -- :meth:`ContextMethod.apply` stores the requests in
  the edit memory (source language, as given); a query retrieves the top-k
  stored edits by its own text and keeps those scoring at least
  ``threshold``. No hit: the plain formatted question.

Either way :meth:`apply` returns a :class:`ContextHandle` whose ``restore()``
removes exactly the edits it added (the sequential protocol keeps them, since
the runner does not restore between edits).

Memory: ``memory_path`` (an SQLite file, shared and persistent) or, by
default, a temporary file per method instance. Retriever: ``dense`` (a local
sentence-transformers directory in ``retriever_path``, which a model's
provider may fill: the toy world gives its own trained retriever) or
``bm25``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from ..config import ConfigError
from ..data.schema import EditRequest, Query
from ..memory.retrievers import DenseEncoder, Hit, Retriever, make_retriever
from ..memory.store import EditStore, MemoryEdit
from .base import EditHandle, EditMethod, MethodConfig

Mode = Literal["gold", "retrieve"]


@dataclass
class ContextConfig(MethodConfig):
    """Options shared by the in-context methods."""

    mode: Mode = "gold"
    #: how many retrieved edits go in context at most
    top_k: int = 1
    #: minimum retrieval score for an edit to go in context (cosine for dense, BM25 score for bm25); null = none;
    #: "auto" = the threshold calibrated for the dense retriever (``threshold`` in its ``report.json``, written
    #: by the retriever's trainer), else 0.5
    threshold: float | Literal["auto"] | None = 0.5
    retriever: Literal["dense", "bm25"] = "dense"
    #: local sentence-transformers directory (dense retriever; IKE's demonstrations use it when set)
    retriever_path: str | None = None
    #: SQLite edit memory; null = a temporary file per run
    memory_path: str | None = None
    #: what is embedded for each stored edit: its prompt, or "prompt target" ("fact")
    index_text: Literal["prompt", "fact"] = "prompt"
    #: from this many stored edits on, dense search uses faiss HNSW instead of exact search
    faiss_min: int = 20000
    #: in gold mode, put every remembered edit of the case in context (mix editing), not only one
    gold_all: bool = False

    def validate(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"top_k must be ≥ 1, got {self.top_k}")
        if self.faiss_min < 1:
            raise ConfigError(f"faiss_min must be ≥ 1, got {self.faiss_min}")


class ContextHandle(EditHandle):
    """Undoes one ``apply``: forgets gold requests or deletes the stored edits it added."""

    def __init__(self, method: "ContextMethod", gold_keys: list[tuple[str, int]], memory_ids: list[int]):
        self.method, self.gold_keys, self.memory_ids = method, gold_keys, memory_ids
        self._done = False

    def restore(self) -> None:
        if self._done:
            return
        for case_id, token in self.gold_keys:
            reqs = self.method._gold.get(case_id, [])
            self.method._gold[case_id] = [(t, r) for t, r in reqs if t != token]
            if not self.method._gold[case_id]:
                del self.method._gold[case_id]
        if self.memory_ids:
            self.method.memory.delete(self.memory_ids)
        self._done = True


class ContextMethod(EditMethod):
    """Base of the in-context methods; subclasses implement :meth:`render`."""

    kind = "context"
    config_class = ContextConfig

    def __init__(self, model, tokenizer, formatter, config: ContextConfig | None = None):
        super().__init__(model, tokenizer, formatter, config)
        self._gold: dict[str, list[tuple[int, EditRequest]]] = {}
        self._token = 0
        self._memory: EditStore | None = None
        self._retriever: Retriever | None = None
        self._stream = uuid.uuid4().hex[:12]
        self._cache: dict[tuple[str, int], list[Hit]] = {}
        self._auto_threshold: float | None = None

    # --- resources ------------------------------------------------------------------
    @property
    def memory(self) -> EditStore:
        if self._memory is None:
            self._memory = EditStore(self.config.memory_path)
        return self._memory

    def retriever_path(self) -> str | None:
        """The dense retriever directory of the config (``None``: none configured)."""
        return self.config.retriever_path or None

    @property
    def retriever(self) -> Retriever:
        if self._retriever is None:
            kw: dict[str, Any] = {}
            path = None
            if self.config.retriever == "dense":
                path = self.retriever_path()
                if path is None:
                    raise ConfigError("mode 'retrieve' with the dense retriever needs retriever_path: a local "
                                      "sentence-transformers directory (or use retriever: bm25 for monolingual)")
                kw = {"faiss_min": self.config.faiss_min, "index_text": self.config.index_text}
            self._retriever = make_retriever(self.config.retriever, self.memory, path=path, **kw)
        return self._retriever

    def score_threshold(self) -> float | None:
        """The retrieval threshold in force: the configured one, or for ``auto`` the dense retriever's calibrated
        one (``report.json`` beside it), falling back to 0.5."""
        if self.config.threshold != "auto":
            return self.config.threshold
        if self._auto_threshold is None:
            thr = 0.5
            path = self.retriever_path() if self.config.retriever == "dense" else None
            report = Path(path) / "report.json" if path else None
            if report is not None and report.exists():
                try:
                    thr = float(json.loads(report.read_text())["threshold"])
                except (ValueError, KeyError, TypeError) as e:
                    raise ConfigError(f"{report}: no numeric 'threshold' for threshold: auto ({e})") from None
            self._auto_threshold = thr
        return self._auto_threshold

    def encoder(self) -> DenseEncoder | None:
        """The dense encoder (for similarity uses such as IKE's demonstrations), if one is configured."""
        try:
            path = self.retriever_path()
        except ConfigError:
            return None
        return DenseEncoder.cached(path) if path else None

    def close(self) -> None:
        if self._memory is not None:
            self._memory.close()
            self._memory = None
        self._retriever = None

    # --- editing ----------------------------------------------------------------------
    def apply(self, requests: Sequence[EditRequest]) -> ContextHandle:
        if self.config.mode == "gold":
            keys = []
            for r in requests:
                self._token += 1
                self._gold.setdefault(r.case_id, []).append((self._token, r))
                keys.append((r.case_id, self._token))
            return ContextHandle(self, keys, [])
        ids = self.memory.add_many([MemoryEdit.from_request(r, batch=self._stream) for r in requests])
        return ContextHandle(self, [], ids)

    def descriptors_for(self, query: Query) -> list[EditRequest]:
        """The edits that go in context for ``query`` (gold: the case's own; retrieve: top-k over threshold)."""
        if self.config.mode == "gold":
            reqs = [r for _, r in self._gold.get(query.case_id, [])]
            if not reqs or self.config.gold_all:
                return reqs
            same = [r for r in reqs if r.lang == query.lang]
            return [same[0] if same else reqs[0]]
        return [h.edit.to_request() for h in self.retrieve(query.prompt)]

    def retrieve(self, text: str) -> list[Hit]:
        gen = self.memory.generation()
        key = (text, gen)
        if key not in self._cache:
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[key] = self.retriever.retrieve(text, self.config.top_k, self.score_threshold())
        return self._cache[key]

    def prompt(self, query: Query) -> str:
        return self.prompt_for(query, self.descriptors_for(query))

    def prompt_for(self, query: Query, edits: Sequence[EditRequest]) -> str:
        """The full prompt for ``query`` with exactly ``edits`` in context (none: the plain question)."""
        if not edits:
            return self.formatter.format(query.prompt, query.style)
        return self.formatter.format(self.render(edits, query), query.style)

    def render(self, edits: Sequence[EditRequest], query: Query) -> str:
        """The user message with ``edits`` in context for ``query`` (edits is never empty)."""
        raise NotImplementedError
