"""The embeddings index kept beside an edit memory.

:class:`VectorIndex` holds unit-normalised vectors keyed by edit id and
answers top-k inner-product (cosine) queries: an exact NumPy search while
the memory is small, a faiss-cpu HNSW graph once it has ``faiss_min``
vectors or more (approximate, sub-millisecond at 1e5 edits). Retired edits
are masked at once and dropped from the graph at the next rebuild.

:class:`StoreIndex` keeps a :class:`VectorIndex` in step with an
:class:`~xke.memory.store.EditStore` (the source of truth): it encodes the
active edits that are missing, drops the ones no longer active, and caches
the vectors on disk beside the store (``<store>.index/<encoder key>/``) so a
reopened memory does not re-encode everything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .store import EditStore, MemoryEdit

#: below this many vectors search is exact (NumPy); from it on, faiss HNSW
DEFAULT_FAISS_MIN = 20_000


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(n, 1e-12), dtype=np.float32)


class VectorIndex:
    """Cosine top-k over vectors keyed by integer id (vectors are normalised on insert)."""

    def __init__(self, dim: int, *, faiss_min: int = DEFAULT_FAISS_MIN, hnsw_m: int = 32,
                 ef_search: int = 64, ef_construction: int = 80):
        self.dim = int(dim)
        self.faiss_min = int(faiss_min)
        self.hnsw_m, self.ef_search, self.ef_construction = hnsw_m, ef_search, ef_construction
        self._vecs = np.zeros((0, self.dim), dtype=np.float32)
        self._ids = np.zeros((0,), dtype=np.int64)
        self._alive = np.zeros((0,), dtype=bool)
        self._pos: dict[int, int] = {}
        self._faiss = None          # faiss HNSW index over every row of _vecs (built on first search)

    # --- contents --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._pos)

    def ids(self) -> set[int]:
        return set(self._pos)

    @property
    def uses_faiss(self) -> bool:
        return len(self) >= self.faiss_min

    def add(self, ids: Sequence[int], vecs: np.ndarray) -> None:
        ids = [int(i) for i in ids]
        if not ids:
            return
        v = _normalize(vecs)
        if v.shape != (len(ids), self.dim):
            raise ValueError(f"expected vectors of shape ({len(ids)}, {self.dim}), got {v.shape}")
        self.remove([i for i in ids if i in self._pos])
        start = len(self._ids)
        self._vecs = np.concatenate([self._vecs, v]) if start else v
        self._ids = np.concatenate([self._ids, np.asarray(ids, dtype=np.int64)])
        self._alive = np.concatenate([self._alive, np.ones(len(ids), dtype=bool)])
        for k, i in enumerate(ids):
            self._pos[i] = start + k
        if self._faiss is not None:
            self._faiss.add(v)

    def remove(self, ids: Sequence[int]) -> None:
        for i in ids:
            p = self._pos.pop(int(i), None)
            if p is not None:
                self._alive[p] = False
        dead = len(self._ids) - len(self._pos)
        if dead and dead > 0.25 * max(len(self._ids), 1):
            self._compact()

    def _compact(self) -> None:
        keep = np.nonzero(self._alive)[0]
        self._vecs, self._ids = self._vecs[keep], self._ids[keep]
        self._alive = np.ones(len(keep), dtype=bool)
        self._pos = {int(i): k for k, i in enumerate(self._ids)}
        self._faiss = None

    def _build_faiss(self) -> None:
        import faiss

        if len(self._ids) != len(self._pos):
            self._compact()
        idx = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        idx.hnsw.efConstruction = self.ef_construction
        idx.add(self._vecs)
        self._faiss = idx

    # --- search ----------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """For each query vector, up to ``k`` ``(id, cosine)`` pairs, best first."""
        q = _normalize(queries)
        n_alive = len(self._pos)
        if n_alive == 0 or k <= 0:
            return [[] for _ in range(len(q))]
        k = min(k, n_alive)
        if self.uses_faiss:
            if self._faiss is None:
                self._build_faiss()
            self._faiss.hnsw.efSearch = max(self.ef_search, 2 * k)
            dead = len(self._ids) - n_alive
            kk = min(len(self._ids), k + dead if dead < 64 else 2 * k + 64)
            scores, rows = self._faiss.search(q, kk)
            out = []
            for srow, rrow in zip(scores, rows):
                hits = [(int(self._ids[r]), float(s)) for s, r in zip(srow, rrow) if r >= 0 and self._alive[r]]
                out.append(hits[:k])
            return out
        sims = q @ self._vecs.T
        if len(self._pos) != len(self._ids):
            sims[:, ~self._alive] = -np.inf
        out = []
        for row in sims:
            if k < len(row):
                top = np.argpartition(-row, k - 1)[:k]
                top = top[np.argsort(-row[top], kind="stable")]
            else:
                top = np.argsort(-row, kind="stable")[:k]
            out.append([(int(self._ids[r]), float(row[r])) for r in top if np.isfinite(row[r])])
        return out

    # --- persistence -------------------------------------------------------------------
    def save(self, directory: str | Path, meta: dict | None = None) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        keep = np.nonzero(self._alive)[0]
        tmp = d / "vectors.tmp.npz"
        with open(tmp, "wb") as f:
            np.savez(f, ids=self._ids[keep], vecs=self._vecs[keep])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, d / "vectors.npz")
        (d / "meta.json").write_text(json.dumps({"dim": self.dim, "n": int(len(keep)), **(meta or {})}))

    @classmethod
    def load(cls, directory: str | Path, **kw) -> tuple["VectorIndex", dict] | None:
        d = Path(directory)
        try:
            meta = json.loads((d / "meta.json").read_text())
            data = np.load(d / "vectors.npz")
            idx = cls(int(meta["dim"]), **kw)
            idx.add(data["ids"].tolist(), data["vecs"])
            return idx, meta
        except (OSError, ValueError, KeyError):
            return None


class StoreIndex:
    """A :class:`VectorIndex` kept in step with an :class:`EditStore`.

    ``encode(texts) -> np.ndarray`` embeds edit texts; ``text_of(edit)`` picks
    the text to embed (default: the edit prompt); ``key`` names the encoder so
    the on-disk cache is never mixed between encoders.
    """

    def __init__(self, store: EditStore, encode: Callable[[list[str]], np.ndarray], dim: int, *, key: str,
                 text_of: Callable[[MemoryEdit], str] | None = None, persist: bool = True,
                 faiss_min: int = DEFAULT_FAISS_MIN, batch_size: int = 256):
        self.store, self.encode, self.key = store, encode, key
        self.text_of = text_of or (lambda e: e.prompt)
        self.batch_size = batch_size
        self.dir = (store.path.parent / f"{store.path.name}.index" / _safe(f"{store.uuid()}|{key}")
                    if persist else None)
        self.index = VectorIndex(dim, faiss_min=faiss_min)
        self._generation = -1
        if self.dir is not None:
            loaded = VectorIndex.load(self.dir, faiss_min=faiss_min)
            if loaded is not None and loaded[0].dim == dim:
                self.index = loaded[0]

    def sync(self) -> dict[str, int]:
        """Bring the index up to date with the store; returns counts added/removed."""
        gen = self.store.generation()
        if gen == self._generation:
            return {"added": 0, "removed": 0}
        active = set(self.store.active_ids())
        have = self.index.ids()
        gone = have - active
        missing = sorted(active - have)
        if gone:
            self.index.remove(sorted(gone))
        for start in range(0, len(missing), 4096):
            chunk = missing[start:start + 4096]
            edits = self.store.get_many(chunk)
            ids = [i for i in chunk if i in edits]
            texts = [self.text_of(edits[i]) for i in ids]
            if ids:
                self.index.add(ids, self.encode(texts))
        self._generation = gen
        if self.dir is not None and (gone or missing):
            self.index.save(self.dir, {"key": self.key, "generation": gen})
        return {"added": len(missing), "removed": len(gone)}

    def search(self, query_vecs: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        self.sync()
        return self.index.search(query_vecs, k)


def _safe(key: str) -> str:
    import hashlib

    tail = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)[-48:]
    return f"{tail}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
