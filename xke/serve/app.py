"""The HTTP API (FastAPI): OpenAI-compatible chat over the edit memory, the edits API, the web page.

Every error is a JSON body in OpenAI's shape, ``{"error": {"message", "type",
"param", "code"}}``, where ``param`` names the bad field (``messages[0].content``,
``edits[2].language``). Write endpoints need an API key (``Authorization:
Bearer KEY`` or ``X-API-Key: KEY``); reads need one only with ``keyed_reads``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..data.languages import normalize_lang
from ..errors import DataError, XkeError
from .memory import EditMemory, edit_to_json, edits_from_json
from .service import ChatService, hit_to_json

STATIC = Path(__file__).parent / "static"
ROLES = ("system", "developer", "user", "assistant", "tool")


class ApiError(Exception):
    """An error answered as ``{"error": {...}}`` with HTTP ``status``."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 type: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.code = status, message, param, type, code

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse({"error": {"message": self.message, "type": self.type, "param": self.param,
                                       "code": self.code}}, status_code=self.status, headers=headers)


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, f"{param}: {message}", param=param)


def parse_time(value: Any, param: str) -> float:
    """Unix seconds (number or numeric string) or an ISO 8601 time (local time unless it has an offset)."""
    from datetime import datetime

    if isinstance(value, bool) or value is None:
        raise _bad(param, f"expected Unix seconds or an ISO time, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(value.strip()).timestamp()
        except ValueError:
            pass
    raise _bad(param, f"expected Unix seconds or an ISO time like 2025-01-31T12:00:00, got {value!r}")


class KeyRing:
    """API keys: ``{key: holder name}``; the holder name goes into the audit log."""

    def __init__(self, keys: dict[str, str], *, keyed_reads: bool = False):
        if not keys:
            raise XkeError("the server needs at least one API key for its write endpoints")
        self.keys = dict(keys)
        self.keyed_reads = keyed_reads

    def holder(self, request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        if not given:
            return None
        for key, name in self.keys.items():
            if hmac.compare_digest(given.encode(), key.encode()):
                return name
        return None

    def require(self, request: Request, *, write: bool) -> str:
        """The actor for the audit log (``holder`` [as ``X-XKE-User``] ``@client``); 401 without a valid key."""
        name = self.holder(request)
        if name is None and (write or self.keyed_reads):
            raise ApiError(401, "this endpoint needs an API key: send 'Authorization: Bearer KEY' (the key given "
                           "to `xke serve --api-key` or XKE_API_KEY)", type="authentication_error",
                           code="invalid_api_key")
        user = request.headers.get("x-xke-user", "").strip()[:100]
        who = f"{user} (key {name})" if user and name else (name or "anonymous")
        host = request.client.host if request.client else "?"
        return f"{who}@{host}"


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise _bad("body", "empty request body; send JSON")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _bad("body", f"invalid JSON: {e}") from None


def _message_text(msg: Any, i: int) -> tuple[str, str]:
    p = f"messages[{i}]"
    if not isinstance(msg, dict):
        raise _bad(p, "expected an object with 'role' and 'content'")
    role = msg.get("role")
    if role not in ROLES:
        raise _bad(f"{p}.role", f"expected one of {', '.join(ROLES)}, got {role!r}")
    content = msg.get("content")
    if isinstance(content, list):  # content parts: only text parts are read
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _bad(f"{p}.content[{j}]", "only {'type': 'text', 'text': ...} parts are supported")
            texts.append(part["text"])
        content = "\n".join(texts)
    if content is None and role == "assistant":
        content = ""
    if not isinstance(content, str):
        raise _bad(f"{p}.content", f"expected a string, got {type(content).__name__}")
    return role, content


def parse_chat(body: Any, service: ChatService) -> dict[str, Any]:
    """Validated chat request: the question (last user message), language, use_memory, max_tokens, stream."""
    if not isinstance(body, dict):
        raise _bad("body", "expected a JSON object")
    model = body.get("model")
    if model is not None and model != service.model_id:
        raise ApiError(404, f"model {model!r} is not served here; GET /v1/models lists {service.model_id!r}",
                       param="model", code="model_not_found")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise _bad("messages", "expected a non-empty list of messages")
    parsed = [_message_text(m, i) for i, m in enumerate(msgs)]
    users = [(i, t) for i, (r, t) in enumerate(parsed) if r == "user"]
    if not users:
        raise _bad("messages", "no user message")
    i, question = users[-1]
    if not question.strip():
        raise _bad(f"messages[{i}].content", "empty question")
    n = body.get("n", 1)
    if n != 1:
        raise _bad("n", "only n=1 is supported (answers are greedy)")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    if max_tokens is None:
        max_tokens = service.max_tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= service.max_tokens_limit:
        raise _bad(name, f"expected an integer in 1..{service.max_tokens_limit}, got {max_tokens!r}")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream", f"expected true/false, got {stream!r}")
    use_memory = body.get("use_memory", True)
    if not isinstance(use_memory, bool):
        raise _bad("use_memory", f"expected true/false, got {use_memory!r}")
    language = body.get("language")
    if language is not None:
        try:
            language = normalize_lang(language)
        except XkeError as e:
            raise _bad("language", str(e)) from None
    temp = body.get("temperature")
    if temp is not None and (isinstance(temp, bool) or not isinstance(temp, (int, float)) or not 0 <= temp <= 2):
        raise _bad("temperature", f"expected a number in 0..2, got {temp!r}")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise _bad("stream_options", "expected an object")
    return {"question": question, "language": language, "use_memory": use_memory, "max_tokens": max_tokens,
            "stream": stream, "include_usage": bool(opts.get("include_usage"))}


def create_app(service: ChatService, keys: KeyRing) -> FastAPI:
    """The FastAPI application over ``service`` (model, memory, batcher) guarded by ``keys``."""
    memory: EditMemory = service.memory
    app = FastAPI(title="xke serve", version="1", docs_url="/docs", redoc_url=None)
    app.state.service = service

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        err = (exc.errors() or [{}])[0]
        loc = [str(x) for x in err.get("loc", ()) if x not in ("query", "path", "body")]
        param = ".".join(loc) or "request"
        return _bad(param, f"{err.get('msg', 'invalid value')} (got {err.get('input')!r})").response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return ApiError(exc.status_code, str(exc.detail), type="invalid_request_error").response()

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        return ApiError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error").response()

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/health")
    async def health():
        info = await run_in_threadpool(service.info)
        return {"status": "ok", **info}

    @app.get("/v1/models")
    async def models(request: Request):
        keys.require(request, write=False)
        return {"object": "list", "data": [{"id": service.model_id, "object": "model", "created": 0,
                                            "owned_by": "xke"}]}

    # --- chat ---------------------------------------------------------------------------------
    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        keys.require(request, write=False)
        req = parse_chat(await _json_body(request), service)
        prep = await run_in_threadpool(service.prepare, req["question"], req["language"], req["use_memory"])
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        extra = {"edits_used": [hit_to_json(h) for h in prep.hits], "language": prep.language,
                 "use_memory": req["use_memory"]}
        if not req["stream"]:
            out = await asyncio.wrap_future(service.batcher.submit(prep.prompt, req["max_tokens"]))
            return {"id": cid, "object": "chat.completion", "created": created, "model": service.model_id,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": out.text},
                                 "logprobs": None, "finish_reason": out.finish_reason}],
                    "usage": {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens,
                              "total_tokens": out.prompt_tokens + out.completion_tokens},
                    **extra}
        return StreamingResponse(_stream(service, prep.prompt, req, cid, created, extra),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    # --- edits ---------------------------------------------------------------------------------
    @app.get("/v1/edits")
    async def list_edits(request: Request, language: str | None = None, active: str = "true",
                         since: str | None = None, until: str | None = None, limit: int | None = None):
        keys.require(request, write=False)
        flags = {"true": True, "false": False, "all": None}
        if active.lower() not in flags:
            raise _bad("active", f"expected true, false or all, got {active!r}")
        if language is not None:
            try:
                language = normalize_lang(language)
            except XkeError as e:
                raise _bad("language", str(e)) from None
        if limit is not None and limit < 1:
            raise _bad("limit", f"expected a positive integer, got {limit}")
        t0 = parse_time(since, "since") if since is not None else None
        t1 = parse_time(until, "until") if until is not None else None
        edits = await run_in_threadpool(memory.list, language=language, active=flags[active.lower()], since=t0,
                                        until=t1, limit=limit)
        return {"object": "list", "data": [edit_to_json(e) for e in edits]}

    @app.get("/v1/edits/{edit_id}")
    async def get_edit(request: Request, edit_id: int):
        keys.require(request, write=False)
        e = await run_in_threadpool(memory.get, edit_id)
        if e is None:
            raise ApiError(404, f"no edit with id {edit_id}", param="id", code="edit_not_found")
        return edit_to_json(e)

    @app.post("/v1/edits", status_code=201)
    async def add_edits(request: Request):
        actor = keys.require(request, write=True)
        try:
            edits = edits_from_json(await _json_body(request))
        except DataError as e:
            raise _bad(e.field or "body", str(e).split(": ", 1)[-1]) from None
        ids = await run_in_threadpool(memory.add, edits, actor=actor)
        for e, i in zip(edits, ids):
            e.id = i
        return {"object": "list", "data": [edit_to_json(e) for e in edits]}

    @app.delete("/v1/edits/{edit_id}")
    async def retire_edit(request: Request, edit_id: int):
        actor = keys.require(request, write=True)
        changed = await run_in_threadpool(memory.retire, edit_id, actor=actor)
        e = await run_in_threadpool(memory.get, edit_id)
        if e is None:
            raise ApiError(404, f"no edit with id {edit_id}", param="id", code="edit_not_found")
        return {**edit_to_json(e), "retired_now": changed}

    @app.post("/v1/edits/rollback")
    async def rollback(request: Request):
        actor = keys.require(request, write=True)
        body = await _json_body(request)
        if not isinstance(body, dict) or "to" not in body:
            raise _bad("to", "missing; give the time to roll back to (Unix seconds or ISO time)")
        extra = sorted(set(body) - {"to"})
        if extra:
            raise _bad(extra[0], "unknown field; only 'to' is accepted")
        t = parse_time(body["to"], "to")
        if t > time.time() + 1:
            raise _bad("to", "is in the future")
        r = await run_in_threadpool(memory.rollback, t, actor=actor)
        return {"to": t, **r}

    @app.get("/v1/audit")
    async def audit(request: Request, since: str | None = None, limit: int | None = 100):
        keys.require(request, write=True)   # who did what from where: for key holders only
        t0 = parse_time(since, "since") if since is not None else None
        rows = await run_in_threadpool(memory.audit, since=t0, limit=limit)
        return {"object": "list", "data": [a.to_dict() for a in rows]}

    return app


async def _stream(service: ChatService, prompt: str, req: dict, cid: str, created: int, extra: dict):
    """Server-sent events in OpenAI's chunk format; the first chunk carries ``edits_used``."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue = asyncio.Queue()
    fut = service.batcher.submit(prompt, req["max_tokens"],
                                 on_text=lambda text: loop.call_soon_threadsafe(q.put_nowait, text))
    fut.add_done_callback(lambda f: loop.call_soon_threadsafe(q.put_nowait, None))

    def chunk(delta: dict, finish: str | None = None, **more) -> str:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": service.model_id,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **more}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""}, **extra)
    sent = ""
    while True:
        text = await q.get()
        if text is None:
            break
        # send only what is stable: the text so far must extend what was sent and end in a whole character
        if text.startswith(sent) and len(text) > len(sent) and not text.endswith("\ufffd"):
            yield chunk({"content": text[len(sent):]})
            sent = text
    try:
        out = fut.result()
    except Exception as e:  # the engine failed: report it in the stream
        err = {"error": {"message": f"generation failed: {type(e).__name__}: {e}", "type": "server_error"}}
        yield f"data: {json.dumps(err)}\n\n"
        yield "data: [DONE]\n\n"
        return
    if out.text != sent:
        rest = out.text[len(sent):] if out.text.startswith(sent) else out.text
        if rest:
            yield chunk({"content": rest})
    yield chunk({}, out.finish_reason)
    if req["include_usage"]:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": service.model_id,
                "choices": [], "usage": {"prompt_tokens": out.prompt_tokens,
                                         "completion_tokens": out.completion_tokens,
                                         "total_tokens": out.prompt_tokens + out.completion_tokens}}
        yield f"data: {json.dumps(body)}\n\n"
    yield "data: [DONE]\n\n"
