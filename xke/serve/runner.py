"""Putting a server together (model, memory, method, engine) and running it with uvicorn.

:func:`build_service` loads everything ``xke serve`` needs; :func:`start_server`
runs an app on a background thread (tests, the load benchmark) and
:func:`run_server` in the foreground (the CLI). Both bind to 127.0.0.1
unless told otherwise.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .generation import Batcher, make_backend
from .memory import SQLiteMemory
from .service import ChatService

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def served_name(model_spec: str) -> str:
    """The model id shown by ``/v1/models``: the spec, or a model directory's name (its parent's for
    ``.../model``)."""
    p = Path(model_spec)
    if model_spec.startswith("world:"):
        p = Path(model_spec.split(":", 1)[1])
    elif not p.exists():
        return model_spec
    p = p.resolve()
    return p.parent.name if p.name == "model" else p.name


def build_service(model: str, memory: str | Path, *, engine: str = "transformers", device: str = "auto",
                  dtype: str = "auto", retriever: str | None = None, retriever_path: str | None = None,
                  threshold: Any = "preset", top_k: int | None = None, max_batch: int = 16,
                  batch_window: float = 0.01, max_tokens: int = 64, default_language: str = "en",
                  model_id: str | None = None, method: str = "xkde", template: str = "auto",
                  loaded: Any = None) -> ChatService:
    """A :class:`ChatService`: ``model`` (a model spec, see :mod:`xke.models.loading`) read through the X-KDE
    prompt in ``retrieve`` mode over the SQLite memory ``memory``. ``threshold="preset"`` keeps the method
    preset's (``auto`` for toy-world models); ``loaded`` reuses an already loaded ``LoadedModel``."""
    from ..methods.base import build_method
    from ..methods.context import ContextMethod
    from ..models.prompts import PromptFormatter
    from ..world.provider import model_path, provide_dir
    from .generation import TransformersBackend

    if loaded is not None:
        backend, mdl, tok = TransformersBackend(loaded.model, loaded.tokenizer), loaded.model, loaded.tokenizer
    else:
        backend, mdl, tok = make_backend(engine, model_spec=model, device=device, dtype=dtype)
    if mdl is None:  # vLLM holds the weights; the method only needs the config (world dir, family)
        from transformers import AutoConfig

        mdl = _ConfigOnly(AutoConfig.from_pretrained(model_path(model)), str(model_path(model)))
    overrides: dict[str, Any] = {"mode": "retrieve", "memory_path": str(memory)}
    if retriever is not None:
        overrides["retriever"] = retriever
    if retriever_path is not None:
        overrides["retriever_path"] = retriever_path
    if threshold != "preset":
        overrides["threshold"] = threshold
    if top_k is not None:
        overrides["top_k"] = top_k
    # the model's provider: preset family, and for a toy-world model its retriever (trained once when missing)
    provided = provide_dir(getattr(loaded, "path", None) or model_path(model),
                           retrieve=retriever_path is None and retriever in (None, "dense"))
    m = build_method(method, mdl, tok, PromptFormatter(tok, mode=template), overrides=overrides,
                     family=provided.family, defaults=provided.method_defaults)
    if not isinstance(m, ContextMethod):
        raise ConfigError(f"--method {method}: the server needs an in-context method (xkde, lte, ike)")
    m.retriever  # load the retriever now (a wrong path fails at start, not at the first question)
    m.score_threshold()
    store = SQLiteMemory(m.memory)
    return ChatService(m, store, Batcher(backend, max_batch=max_batch, window=batch_window),
                       model_id=model_id or served_name(model), default_language=default_language,
                       max_tokens=max_tokens)


class _ConfigOnly:
    """Stands in for the model object where only ``config`` / ``name_or_path`` are read (vLLM engine)."""

    def __init__(self, config, path: str):
        self.config, self.name_or_path = config, path


@dataclass
class RunningServer:
    """A uvicorn server on a background thread."""

    server: Any
    thread: threading.Thread
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def start_server(app, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 30.0) -> RunningServer:
    """Serve ``app`` on a background thread (``port=0``: a free port); returns once it accepts requests."""
    import uvicorn

    sock = _bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="xke-serve", daemon=True)
    t.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not t.is_alive() or time.monotonic() > deadline:
            raise ConfigError(f"the server did not start on {host}:{sock.getsockname()[1]}")
        time.sleep(0.02)
    return RunningServer(server, t, host, sock.getsockname()[1])


def run_server(app, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``app`` in the foreground until interrupted."""
    import uvicorn

    sock = _bind(host, port)
    uvicorn.Server(uvicorn.Config(app, log_level="info")).run(sockets=[sock])
