"""Retrievers: which stored edits go in context for a query.

One interface, :class:`Retriever`, over an :class:`~xke.memory.store.EditStore`:
``search(queries, k, threshold)`` returns, per query, up to ``k``
:class:`Hit` objects (edit + score), best first, dropping hits whose score is
below ``threshold`` -- below it no edit is put in context (LTE always put its
top hit in context, which costs locality).

- :class:`DenseRetriever`: a sentence-transformers model loaded from a LOCAL
  directory (a multilingual one such as paraphrase-multilingual-mpnet-base-v2
  or BGE-M3 for real use; the toy world's trained retriever for the world).
  Scores are cosine similarities in [-1, 1]. Exact search for small memories,
  faiss HNSW for large ones (:mod:`xke.memory.index`).
- :class:`BM25Retriever`: sparse BM25 (``bm25s``) for monolingual use; words
  are lower-cased, CJK characters are tokens of their own. Scores are raw
  BM25 scores (unbounded), so its threshold is on that scale.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError
from .index import DEFAULT_FAISS_MIN, StoreIndex
from .store import EditStore, MemoryEdit

RETRIEVER_KINDS = ("dense", "bm25")


@dataclass(frozen=True)
class Hit:
    """A retrieved edit and its similarity to the query."""

    edit: MemoryEdit
    score: float


# --- dense encoders ---------------------------------------------------------------------
_ENCODERS: dict[tuple[str, float], "DenseEncoder"] = {}


class DenseEncoder:
    """A sentence-transformers model from a local directory, producing unit vectors."""

    def __init__(self, path: str | Path, *, device: str = "cpu", batch_size: int = 64):
        p = Path(path).expanduser()
        if not p.is_dir():
            hint = (" xke never downloads models: download it elsewhere and pass its local directory."
                    if "/" in str(path) and not str(path).startswith((".", "/", "~")) else "")
            raise ConfigError(f"retriever model {str(path)!r} is not a local directory.{hint}")
        if not ((p / "modules.json").exists() or (p / "config.json").exists()):
            raise ConfigError(f"{p} is not a sentence-transformers model directory (no modules.json/config.json)")
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(str(p), device=device, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load retriever model from {p}: {e}") from e
        self.model.eval()
        self.path = p.resolve()
        self.batch_size = batch_size
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim() or len(self.encode(["x"])[0]))
        self.key = f"dense:{self.path}:{_mtime(self.path):.0f}"

    @classmethod
    def cached(cls, path: str | Path, **kw) -> "DenseEncoder":
        """The encoder for ``path``, reused while the directory is unchanged."""
        p = Path(path).expanduser()
        key = (str(p.resolve()), _mtime(p) if p.exists() else 0.0)
        enc = _ENCODERS.get(key)
        if enc is None:
            enc = _ENCODERS[key] = cls(p, **kw)
        return enc

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.zeros((0, getattr(self, "dim", 0)), dtype=np.float32)
        import torch

        with torch.inference_mode():
            v = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                  normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(v, dtype=np.float32)


def _mtime(p: Path) -> float:
    try:
        return max([p.stat().st_mtime] + [c.stat().st_mtime for c in p.iterdir()])
    except OSError:
        return 0.0


# --- retrievers -------------------------------------------------------------------------
class Retriever(ABC):
    """Finds stored edits for query texts. The store is the source of truth; call :meth:`sync` (or just
    :meth:`search`, which syncs) after writes."""

    kind: str

    def __init__(self, store: EditStore):
        self.store = store

    @abstractmethod
    def sync(self) -> None:
        """Bring the retriever's index up to date with the store."""

    @abstractmethod
    def scores(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        """Per query, up to ``k`` ``(edit id, score)`` pairs, best first (no threshold)."""

    def search(self, queries: Sequence[str], k: int = 1, threshold: float | None = None) -> list[list[Hit]]:
        """Per query, up to ``k`` hits with score ≥ ``threshold`` (all when ``None``), best first."""
        self.sync()
        raw = self.scores(list(queries), k)
        ids = sorted({i for row in raw for i, _ in row})
        edits = self.store.get_many(ids) if ids else {}
        out = []
        for row in raw:
            out.append([Hit(edits[i], s) for i, s in row
                        if i in edits and edits[i].active and (threshold is None or s >= threshold)])
        return out

    def retrieve(self, query: str, k: int = 1, threshold: float | None = None) -> list[Hit]:
        return self.search([query], k, threshold)[0]


class DenseRetriever(Retriever):
    """Cosine similarity between query and edit-prompt embeddings."""

    kind = "dense"

    def __init__(self, store: EditStore, encoder: DenseEncoder | str | Path, *, persist: bool = True,
                 faiss_min: int = DEFAULT_FAISS_MIN, index_text: str = "prompt"):
        super().__init__(store)
        self.encoder = encoder if isinstance(encoder, DenseEncoder) else DenseEncoder.cached(encoder)
        if index_text not in ("prompt", "fact"):
            raise ConfigError(f"index_text must be 'prompt' or 'fact', got {index_text!r}")
        text_of = (lambda e: e.prompt) if index_text == "prompt" else (lambda e: f"{e.prompt} {e.target_new}")
        self.index = StoreIndex(store, self.encoder.encode, self.encoder.dim, key=f"{self.encoder.key}|{index_text}",
                                text_of=text_of, persist=persist, faiss_min=faiss_min)

    def sync(self) -> None:
        self.index.sync()

    def scores(self, queries, k):
        if not queries:
            return []
        return self.index.index.search(self.encoder.encode(queries), k)


_WORD = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]|[^\W_]+", re.UNICODE)


def bm25_tokens(text: str) -> list[str]:
    """Lower-cased words; each CJK character a token of its own."""
    return _WORD.findall(text.lower())


class BM25Retriever(Retriever):
    """BM25 over edit prompts (``bm25s``), rebuilt when the store changes. Monolingual use."""

    kind = "bm25"

    def __init__(self, store: EditStore, *, k1: float = 1.5, b: float = 0.75):
        super().__init__(store)
        self.k1, self.b = k1, b
        self._gen = -1
        self._bm25 = None
        self._ids: list[int] = []

    def sync(self) -> None:
        gen = self.store.generation()
        if gen == self._gen:
            return
        import bm25s

        edits = self.store.list(active=True)
        self._ids = [e.id for e in edits]
        self._bm25 = None
        if edits:
            self._bm25 = bm25s.BM25(k1=self.k1, b=self.b)
            self._bm25.index([bm25_tokens(e.prompt) or ["<empty>"] for e in edits], show_progress=False)
        self._gen = gen

    def scores(self, queries, k):
        if not queries:
            return []
        if self._bm25 is None or not self._ids:
            return [[] for _ in queries]
        k = min(k, len(self._ids))
        toks = [bm25_tokens(q) or ["<empty>"] for q in queries]
        docs, scores = self._bm25.retrieve(toks, k=k, show_progress=False, n_threads=1)
        return [[(self._ids[int(d)], float(s)) for d, s in zip(drow, srow) if s > 0]
                for drow, srow in zip(docs, scores)]


def make_retriever(kind: str, store: EditStore, *, path: str | Path | None = None, **kw) -> Retriever:
    """A retriever of ``kind`` (``dense`` needs ``path``, a local sentence-transformers directory)."""
    if kind == "dense":
        if not path:
            raise ConfigError("the dense retriever needs retriever_path: a local sentence-transformers model "
                              "directory (toy-world models get their world's own retriever)")
        return DenseRetriever(store, path, **kw)
    if kind == "bm25":
        return BM25Retriever(store, **kw)
    raise ConfigError(f"unknown retriever {kind!r}; use one of {', '.join(RETRIEVER_KINDS)}")
