"""``xke serve``: the OpenAI-compatible edit server."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sys

_NAMED_KEY = re.compile(r"^([A-Za-z][\w.-]{0,31})=(.+)$")


def register(sub, groups) -> None:
    p = sub.add_parser(
        "serve", help="serve a model over HTTP (OpenAI-compatible) with a persistent edit memory",
        description="Answer OpenAI chat requests with the X-KDE prompt: each question retrieves the stored edits "
                    "above the threshold (any language) and puts them in context. Edits API: POST/GET /v1/edits, "
                    "DELETE /v1/edits/{id}, POST /v1/edits/rollback; web page at /.")
    p.add_argument("--model", required=True, help="local model directory, 'world', 'world:DIR' or a tiny config")
    p.add_argument("--memory", required=True, help="edit memory file (SQLite; created if missing)")
    p.add_argument("--retriever", choices=["dense", "bm25"], default=None,
                   help="dense (cross-lingual; default) or bm25 (monolingual)")
    p.add_argument("--retriever-path", default=None,
                   help="local sentence-transformers directory (toy-world models: the world's retriever)")
    p.add_argument("--threshold", default=None,
                   help="minimum retrieval score for an edit to be used: a number, 'auto' (the retriever's "
                        "calibrated one) or 'none' (default: the method preset's)")
    p.add_argument("--top-k", type=int, default=None, help="edits put in context at most (default 1)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", action="append", default=None, metavar="[NAME=]KEY",
                   help="key for the write endpoints (repeatable; NAME is what the audit log records); default: "
                        "$XKE_API_KEY (comma-separated), else a random key printed at start")
    p.add_argument("--keyed-reads", action="store_true", help="reads (chat, listing) need a key too")
    p.add_argument("--engine", choices=["transformers", "vllm"], default="transformers")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 (transformers engine)")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--max-batch", type=int, default=16, help="requests answered together at most")
    p.add_argument("--batch-window-ms", type=float, default=10.0,
                   help="how long the batcher waits for more requests before a batch starts")
    p.add_argument("--max-tokens", type=int, default=64, help="default answer length limit (tokens)")
    p.add_argument("--default-language", default="en",
                   help="language of Latin-script questions that do not say (requests may send 'language')")
    p.add_argument("--served-name", default=None, help="model id shown by /v1/models (default: from --model)")
    p.set_defaults(func=_serve)


def parse_keys(given: list[str] | None, env: str | None) -> tuple[dict[str, str], bool]:
    """``{key: holder name}`` from ``--api-key`` values (``NAME=KEY`` or ``KEY``) or ``XKE_API_KEY``
    (comma-separated); with neither, one random key. Second value: whether the key was generated."""
    from ..errors import ConfigError

    items = list(given or []) or [k.strip() for k in (env or "").split(",") if k.strip()]
    generated = not items
    if generated:
        items = [f"admin={secrets.token_urlsafe(24)}"]
    keys: dict[str, str] = {}
    for it in items:
        m = _NAMED_KEY.match(it)
        name, key = (m.group(1), m.group(2)) if m else (f"key-{hashlib.sha256(it.encode()).hexdigest()[:8]}", it)
        if len(key) < 8:
            raise ConfigError(f"--api-key for {name!r} is too short ({len(key)} characters; use at least 8)")
        keys[key] = name
    return keys, generated


def _threshold(text: str | None):
    from ..errors import ConfigError

    if text is None:
        return "preset"
    if text.lower() in ("auto", "none", "null"):
        return "auto" if text.lower() == "auto" else None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--threshold {text!r}: give a number, 'auto' or 'none'") from None


def _serve(args) -> int:
    from ..data.languages import normalize_lang
    from ..errors import ConfigError

    try:
        from .app import KeyRing, create_app
        from .runner import LOOPBACK, build_service, run_server
    except ModuleNotFoundError as e:
        raise ConfigError(f"xke serve needs FastAPI and uvicorn ({e}); pip install 'xke[serve]'") from None
    keys, generated = parse_keys(args.api_key, os.environ.get("XKE_API_KEY"))
    if args.max_batch < 1 or args.max_tokens < 1:
        raise ConfigError("--max-batch and --max-tokens must be ≥ 1")
    service = build_service(args.model, args.memory, engine=args.engine, device=args.device, dtype=args.dtype,
                            retriever=args.retriever, retriever_path=args.retriever_path,
                            threshold=_threshold(args.threshold), top_k=args.top_k, max_batch=args.max_batch,
                            batch_window=args.batch_window_ms / 1000, max_tokens=args.max_tokens,
                            default_language=normalize_lang(args.default_language), model_id=args.served_name)
    app = create_app(service, KeyRing(keys, keyed_reads=args.keyed_reads))
    if args.host not in LOOPBACK:
        print(f"xke serve: WARNING: listening on {args.host}: other machines can reach this server; "
              "put it behind TLS and keep the API key secret", file=sys.stderr)
    if generated:
        print(f"xke serve: write API key (generated; pass --api-key to choose one): {next(iter(keys))}")
    info = service.info()
    print(f"xke serve: model {info['model']} ({info['engine']}), memory {args.memory} ({info['edits_active']} active "
          f"edits), retriever {info['retriever']} threshold {info['threshold']}, top-k {info['top_k']}")
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"xke serve: http://{host}:{args.port}/  (OpenAI base_url http://{host}:{args.port}/v1)", flush=True)
    try:
        run_server(app, args.host, args.port)
    finally:
        service.close()
    return 0
