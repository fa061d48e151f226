"""Load test for ``xke serve``: bounded concurrent clients on loopback, mixed reads and edit writes.

    python benchmarks/serve_load.py [--clients 8] [--requests 400] [--write-fraction 0.3] [--threads 1]
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --api-key KEY   # a server already running

Without ``--url`` a server is started in this process on 127.0.0.1 (a free
port) with ``--model`` (default: the tiny toy world's model) over a fresh
temporary memory (``--retriever bm25`` by default; ``dense`` uses the
world's retriever). ``--clients`` threads, each with its own HTTP
connection, send ``--requests`` requests in all: a ``--write-fraction`` of
them ``POST /v1/edits`` (one edit each), the rest reads -- 2/3 chat
completions (questions of the world, half with the memory) and 1/3
``GET /v1/edits``. Only loopback addresses are accepted.

Prints requests/s and p50/p95 latency per kind and overall, then checks that
every acknowledged edit is in the memory with its prompt and answer (exit
status 1 if any is missing).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _questions(world: Path | None) -> list[str]:
    if world is None:
        return ["Where was Ada born?", "阿达出生在哪里？", "Who employs Ada?"]
    from xke.data.loaders import read_jsonl
    out = []
    for case in read_jsonl(world / "cases.jsonl"):
        out += [case.view(lang).prompt for lang in case.languages]
    return out


def _start_local(args):
    from xke.serve.app import KeyRing, create_app
    from xke.serve.runner import build_service, start_server

    model, world = args.model, None
    if model is None:
        from xke.world.build import build_world
        world = Path(build_world(preset="tiny", seed=0))
        model = f"world:{world}"
    elif model.startswith("world:"):
        world = Path(model.split(":", 1)[1])
    tmp = Path(args.memory) if args.memory else Path(tempfile.mkdtemp(prefix="xke-serve-load-")) / "memory.sqlite"
    svc = build_service(model, tmp, retriever=args.retriever, device=args.device, max_batch=args.max_batch,
                        batch_window=args.batch_window_ms / 1000,
                        threshold=0.0 if args.retriever == "bm25" else "preset")
    key = "load-test-key-0123456789"
    srv = start_server(create_app(svc, KeyRing({key: "load"})), "127.0.0.1", 0)
    return svc, srv, srv.url, key, world, tmp


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=None, help="a running server (loopback only); default: start one here")
    ap.add_argument("--api-key", default=os.environ.get("XKE_API_KEY"))
    ap.add_argument("--model", default=None, help="model for the local server (default: the tiny world's)")
    ap.add_argument("--memory", default=None, help="memory file for the local server (default: a new temp file)")
    ap.add_argument("--retriever", choices=["bm25", "dense"], default="bm25")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--batch-window-ms", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--write-fraction", type=float, default=0.3)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads of the local server")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not 0 <= args.write_fraction <= 1 or args.clients < 1 or args.requests < 1:
        ap.error("--write-fraction must be in [0, 1]; --clients and --requests ≥ 1")

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import httpx
    import torch
    torch.set_num_threads(args.threads)

    svc = srv = tmp = None
    if args.url:
        host = urlparse(args.url).hostname
        if host not in LOOPBACK:
            ap.error(f"--url {args.url}: this benchmark only talks to loopback (127.0.0.1, localhost, ::1)")
        if not args.api_key:
            ap.error("--api-key (or XKE_API_KEY) is needed to write edits")
        url, key, world = args.url.rstrip("/"), args.api_key, None
    else:
        svc, srv, url, key, world, tmp = _start_local(args)
    questions = _questions(world)
    rng = random.Random(args.seed)
    plan = [("write" if rng.random() < args.write_fraction else rng.choice(["chat", "chat", "list"]), i)
            for i in range(args.requests)]
    local = threading.local()
    lat: dict[str, list[float]] = {"write": [], "chat": [], "list": []}
    acked: dict[int, tuple[str, str]] = {}
    failures: list[str] = []
    lock = threading.Lock()

    def client() -> httpx.Client:
        if getattr(local, "c", None) is None:
            local.c = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300)
        return local.c

    def one(item):
        kind, i = item
        c = client()
        t0 = time.perf_counter()
        if kind == "write":
            edit = {"prompt": f"load test question {i} about item {i % 97}?", "target": f"answer {i}",
                    "language": "en"}
            r = c.post("/v1/edits", json=edit)
        elif kind == "chat":
            r = c.post("/v1/chat/completions", json={
                "messages": [{"role": "user", "content": questions[i % len(questions)]}],
                "max_tokens": args.max_tokens, "use_memory": i % 2 == 0})
        else:
            r = c.get("/v1/edits", params={"limit": 20})
        dt = time.perf_counter() - t0
        with lock:
            if r.status_code >= 400:
                failures.append(f"{kind} {i}: HTTP {r.status_code} {r.text[:200]}")
                return
            lat[kind].append(dt)
            if kind == "write":
                for e in r.json()["data"]:
                    acked[e["id"]] = (e["prompt"], e["target"])

    t_start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.clients) as pool:   # at most --clients requests in flight
        list(pool.map(one, plan))
    wall = time.perf_counter() - t_start

    done = sum(len(v) for v in lat.values())
    print(f"{done} requests ({len(failures)} failed) from {args.clients} clients in {wall:.2f} s: "
          f"{done / wall:.1f} requests/s  [{url}]")
    every = [x for v in lat.values() for x in v]
    for kind, xs in [*lat.items(), ("all", every)]:
        if xs:
            ms = np.asarray(xs) * 1000
            print(f"  {kind:6s} n={len(xs):4d}  p50 {np.percentile(ms, 50):8.1f} ms  p95 {np.percentile(ms, 95):8.1f} ms")
    if svc is not None:
        print(f"  batches: {svc.batcher.stats}")
    for f in failures[:5]:
        print(f"  FAILED {f}")

    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300) as c:
        stored = {e["id"]: (e["prompt"], e["target"]) for e in c.get("/v1/edits", params={"active": "all"}).json()["data"]}
    missing = [i for i, v in acked.items() if stored.get(i) != v]
    print(f"acknowledged edits: {len(acked)}; in the memory afterwards: {len(acked) - len(missing)}"
          + (f"; MISSING {missing[:10]}" if missing else " (all)"))
    if srv is not None:
        srv.stop()
        svc.close()
        if not args.memory and tmp is not None:
            shutil.rmtree(tmp.parent, ignore_errors=True)
    return 1 if missing or failures else 0


if __name__ == "__main__":
    sys.exit(main())
