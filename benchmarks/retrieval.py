"""Edit-memory benchmark: insert throughput and query latency with 1e5 stored edits (CPU).

    python benchmarks/retrieval.py [--retriever DIR] [--n 100000] [--queries 500] [--threads 1]

DIR is a local sentence-transformers model (default: the tiny toy world's
retriever shipped with xke, as ``xke demo`` uses it; ``xke world retriever``
trains one for any world). Prints: insert throughput (batched
transactions and one edit per transaction), encode throughput while indexing,
p50/p95 query latency (query encoding + search) for the faiss HNSW index and
for exact search, and recall@1 of the approximate index against exact search.
Process CPU seconds are printed beside wall time; threads are set explicitly.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SYL = ["ka", "lo", "mi", "ra", "to", "ven", "sa", "dor", "li", "mon", "ta", "ri", "zo", "pa", "gu", "ne"]
TEMPLATES = ["Where was {s} born?", "Who employs {s}?", "What is the occupation of {s}?",
             "In which year was {s} born?", "Which country is {s} a citizen of?", "Where is {s} headquartered?"]


def _name(rng):
    return " ".join("".join(rng.choice(SYL) for _ in range(rng.randint(2, 3))).capitalize() for _ in range(2))


def _default_retriever() -> str:
    """The tiny toy world's retriever shipped with xke (``xke demo``'s artifacts, copied into the cache)."""
    from xke.artifacts import demo_artifacts

    return str(demo_artifacts()[0] / "retriever")


def pct(xs, q):
    return float(np.percentile(np.asarray(xs) * 1000, q))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--retriever", default=None)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    from xke.memory.index import VectorIndex
    from xke.memory.retrievers import DenseEncoder, DenseRetriever
    from xke.memory.store import EditStore, MemoryEdit

    path = args.retriever or _default_retriever()
    rng = random.Random(args.seed)
    edits = [MemoryEdit(lang="en", prompt=rng.choice(TEMPLATES).format(s=_name(rng)), target_new=_name(rng))
             for _ in range(args.n)]
    print(f"retriever {path}; {args.n} edits; threads {args.threads}")
    with tempfile.TemporaryDirectory() as tmp, EditStore(Path(tmp) / "m.sqlite") as store:
        # inserts
        w0, c0 = time.perf_counter(), time.process_time()
        for i in range(0, args.n, 1000):
            store.add_many(edits[i:i + 1000])
        w, c = time.perf_counter() - w0, time.process_time() - c0
        print(f"insert, 1000 per transaction: {args.n / w:,.0f} edits/s wall ({c:.1f} CPU-s)")
        k = 2000
        w0 = time.perf_counter()
        for e in edits[:k]:
            store.add(e)
        w = time.perf_counter() - w0
        print(f"insert, one per transaction (synchronous=NORMAL): {k / w:,.0f} edits/s")
        store.delete(list(range(args.n + 1, args.n + k + 1)))

        enc = DenseEncoder(path, batch_size=256)
        r = DenseRetriever(store, enc, persist=False, faiss_min=20_000)
        w0, c0 = time.perf_counter(), time.process_time()
        r.sync()
        w, c = time.perf_counter() - w0, time.process_time() - c0
        print(f"index build (encode {args.n} + insert): {w:.1f} s wall, {c:.1f} CPU-s, {args.n / w:,.0f} edits/s")

        qi = rng.sample(range(args.n), args.queries)
        queries = [edits[i].prompt for i in qi]
        enc.encode(queries[:10])  # warm up
        # faiss HNSW path (memory ≥ faiss_min)
        lat = []
        r.index.index.search(enc.encode(queries[:1]), 1)  # builds the graph
        for q in queries:
            t = time.perf_counter()
            r.scores([q], 1)
            lat.append(time.perf_counter() - t)
        approx_top = [h[0][0][0] if h and h[0] else None for h in (r.scores([q], 1) for q in queries)]
        c0 = time.process_time()
        print(f"query (encode + faiss HNSW search, k=1): p50 {pct(lat, 50):.2f} ms, p95 {pct(lat, 95):.2f} ms")
        # search only, and exact search for comparison
        qv = enc.encode(queries)
        exact = VectorIndex(qv.shape[1], faiss_min=10**12)
        exact.add(list(r.index.index._ids), r.index.index._vecs)
        lat_s, lat_e = [], []
        for v in qv:
            t = time.perf_counter()
            r.index.index.search(v[None], 1)
            lat_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            exact.search(v[None], 1)
            lat_e.append(time.perf_counter() - t)
        ex_top = [h[0][0] for h in exact.search(qv, 1)]
        agree = np.mean([a == b for a, b in zip(approx_top, ex_top)])
        print(f"search only: HNSW p50 {pct(lat_s, 50):.3f} ms, p95 {pct(lat_s, 95):.3f} ms; "
              f"exact p50 {pct(lat_e, 50):.2f} ms, p95 {pct(lat_e, 95):.2f} ms (dim {qv.shape[1]})")
        print(f"HNSW top-1 = exact top-1 for {100 * agree:.1f}% of queries")
        self_hit = np.mean([store.get(a).prompt == q for a, q in zip(approx_top, queries) if a is not None])
        print(f"query finds an edit with its exact prompt: {100 * self_hit:.1f}%  "
              f"(CPU-s for the latency loop {time.process_time() - c0:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
