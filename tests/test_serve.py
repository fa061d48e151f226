"""`xke serve`: every endpoint, bad input (4xx naming the field, nothing written), keys, audit, batching,
streaming, concurrent writers, restart, and the openai client against a live server on the tiny world."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from xke.memory.store import EditStore, MemoryEdit  # noqa: E402
from xke.serve.app import KeyRing, create_app  # noqa: E402
from xke.serve.generation import Batcher, Completion  # noqa: E402
from xke.serve.runner import build_service, start_server  # noqa: E402

KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def lm(world_model):
    return world_model


def _service(lm, world, memory, **kw):
    opts = {"retriever": "bm25", "threshold": 0.0, "batch_window": 0.0}
    opts.update(kw)
    return build_service(f"world:{world}", memory, loaded=lm, **opts)


@pytest.fixture()
def served(lm, world, tmp_path):
    svc = _service(lm, world, tmp_path / "mem.sqlite")
    with TestClient(create_app(svc, KeyRing({KEY: "alice"}))) as client:
        yield svc, client
    svc.close()


def _ask(client, text, **extra):
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": text}], **extra})
    assert r.status_code == 200, r.text
    return r.json()


def _plain_answer(svc, text, lang):
    """The model's answer to the bare question (no edit in context), computed without the server."""
    from xke.data.schema import Query
    from xke.models.prompts import encode_prompt
    engine = svc.batcher.backend.engine
    prompt = svc.method.prompt_for(Query("", lang, "chat", text, ""), [])
    return engine.generate([encode_prompt(engine.tokenizer, prompt)], 64)[0].text


# --- reads --------------------------------------------------------------------------------------
def test_health_models_and_page(served):
    svc, c = served
    from xke.serve.memory import EditMemory
    assert isinstance(svc.memory, EditMemory)                    # the server talks to the interface
    h = c.get("/health").json()
    assert h["status"] == "ok" and h["engine"] == "transformers" and h["method"] == "xkde" and h["edits_active"] == 0
    m = c.get("/v1/models").json()
    assert m["object"] == "list" and m["data"][0]["id"] == svc.model_id
    page = c.get("/")
    assert page.status_code == 200 and 'id="ask-btn"' in page.text and "/v1/edits" in page.text


# --- keys -----------------------------------------------------------------------------------------
def test_writes_without_a_valid_key_are_401_and_write_nothing(served):
    svc, c = served
    edit = {"prompt": "Where was Ada born?", "target": "Paris", "language": "en"}
    ok = c.post("/v1/edits", json=edit, headers=AUTH)
    assert ok.status_code == 201
    gen = svc.memory.generation()
    for headers in ({}, {"Authorization": "Bearer wrong-key-000000"}, {"X-API-Key": "nope"}):
        r = c.post("/v1/edits", json=edit, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert r.headers["www-authenticate"] == "Bearer"
        assert c.delete("/v1/edits/1", headers=headers).status_code == 401
        assert c.post("/v1/edits/rollback", json={"to": 0}, headers=headers).status_code == 401
    assert svc.memory.generation() == gen and svc.memory.count() == 1 and svc.memory.get(1).active
    assert c.post("/v1/edits", json=edit, headers={"X-API-Key": KEY}).status_code == 201  # the other header
    assert c.get("/v1/audit").status_code == 401                  # the audit log is for key holders only
    assert len(svc.memory.audit()) == 2


def test_keyed_reads(lm, world, tmp_path):
    svc = _service(lm, world, tmp_path / "m.sqlite")
    with TestClient(create_app(svc, KeyRing({KEY: "alice"}, keyed_reads=True))) as c:
        assert c.get("/v1/edits").status_code == 401
        assert c.get("/v1/models").status_code == 401
        assert c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}).status_code == 401
        assert c.get("/v1/edits", headers=AUTH).status_code == 200
        assert c.get("/health").status_code == 200          # liveness stays open
    svc.close()


# --- edits API --------------------------------------------------------------------------------------
def test_add_batch_list_filters_retire_and_audit(served):
    svc, c = served
    r = c.post("/v1/edits", headers={**AUTH, "X-XKE-User": "bob"}, json={"edits": [
        {"prompt": "Where was Ada born?", "target": "Paris", "language": "en", "subject": "Ada"},
        {"prompt": "阿达出生在哪里？", "target_new": "巴黎", "lang": "zh-CN"}]})
    assert r.status_code == 201, r.text
    a, b = r.json()["data"]
    assert (a["language"], b["language"], b["target"]) == ("en", "zh", "巴黎") and b["id"] == a["id"] + 1
    time.sleep(0.02)
    t_mid = time.time()
    time.sleep(0.02)
    third = c.post("/v1/edits", headers=AUTH, json=[{"prompt": "Who founded X?", "target": "Y", "language": "en"}])
    cid = third.json()["data"][0]["id"]
    assert [e["id"] for e in c.get("/v1/edits?language=zh").json()["data"]] == [b["id"]]
    assert [e["id"] for e in c.get(f"/v1/edits?since={t_mid}").json()["data"]] == [cid]
    assert [e["id"] for e in c.get(f"/v1/edits?until={t_mid}&limit=1").json()["data"]] == [a["id"]]
    assert c.get(f"/v1/edits/{cid}").json()["prompt"] == "Who founded X?"
    assert c.get("/v1/edits/999").status_code == 404
    d = c.delete(f"/v1/edits/{a['id']}", headers=AUTH)
    assert d.status_code == 200 and d.json()["active"] is False and d.json()["retired_now"] is True
    assert c.delete(f"/v1/edits/{a['id']}", headers=AUTH).json()["retired_now"] is False
    assert c.delete("/v1/edits/999", headers=AUTH).status_code == 404
    assert [e["id"] for e in c.get("/v1/edits?active=false").json()["data"]] == [a["id"]]
    assert len(c.get("/v1/edits?active=all").json()["data"]) == 3
    log = c.get("/v1/audit", headers=AUTH).json()["data"]
    assert [(x["action"], x["edit_ids"]) for x in log] == [("add", [a["id"], b["id"]]), ("add", [cid]),
                                                           ("retire", [a["id"]])]
    assert log[0]["actor"] == "bob (key alice)@testclient" and log[1]["actor"] == "alice@testclient"
    # rollback to t_mid: the third edit goes, the retired one (created before, retired after) comes back
    rb = c.post("/v1/edits/rollback", headers=AUTH, json={"to": t_mid})
    assert rb.status_code == 200 and (rb.json()["retired"], rb.json()["reactivated"]) == (1, 1)
    assert sorted(e["id"] for e in c.get("/v1/edits").json()["data"]) == [a["id"], b["id"]]
    last = c.get("/v1/audit", headers=AUTH).json()["data"][-1]
    assert last["action"] == "rollback" and last["detail"]["retired"] == [cid] and last["detail"]["reactivated"] == [a["id"]]


@pytest.mark.parametrize("body,param", [
    ({"edits": [{"prompt": "p", "target": "t", "language": "en"}, {"prompt": "q", "target": "u", "language": "en"},
                {"prompt": "r", "target": "v", "language": "xx"}]}, "edits[2].language"),
    ({"prompt": "p", "language": "en"}, "target"),
    ({"prompt": "  ", "target": "t", "language": "en"}, "prompt"),
    ({"prompt": "p", "target": 3, "language": "en"}, "target"),
    ({"prompt": "p", "target": "t", "language": "en", "created": 0}, "created"),
    ({"prompt": "p", "target": "t", "target_new": "u", "language": "en"}, "target"),
    ([{"prompt": "p", "target": "t", "language": "en"}, "oops"], "edits[1]"),
    ({"edits": []}, "edits"),
    ({"prompt": "p" * 5000, "target": "t", "language": "en"}, "prompt"),
])
def test_bad_edits_are_400_naming_the_field_and_write_nothing(served, body, param):
    svc, c = served
    c.post("/v1/edits", headers=AUTH, json={"prompt": "a", "target": "b", "language": "en"})
    gen, n = svc.memory.generation(), svc.memory.count()
    r = c.post("/v1/edits", headers=AUTH, json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error" and param in err["message"]
    assert svc.memory.generation() == gen and svc.memory.count() == n and len(svc.memory.audit()) == 1


def test_bad_requests_elsewhere_are_4xx_naming_the_field(served):
    svc, c = served
    bad = c.post("/v1/edits", headers={**AUTH, "Content-Type": "application/json"}, content=b"{not json")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "body"
    cases = [
        ({}, 400, "messages"),
        ({"messages": []}, 400, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content"),
        ({"messages": [{"role": "system", "content": "x"}]}, 400, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 400, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 10**6}, 400,
         "max_completion_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, 400, "n"),
        ({"messages": [{"role": "user", "content": "x"}], "language": "klingon"}, 400, "language"),
        ({"messages": [{"role": "user", "content": "x"}], "use_memory": "yes"}, 400, "use_memory"),
        ({"messages": [{"role": "user", "content": "x"}], "model": "gpt-4o"}, 404, "model"),
    ]
    for body, status, param in cases:
        r = c.post("/v1/chat/completions", json=body)
        assert (r.status_code, r.json()["error"]["param"]) == (status, param), (body, r.text)
    for q, param in [("active=maybe", "active"), ("limit=abc", "limit"), ("since=yesterday", "since"),
                     ("language=xx", "language")]:
        r = c.get(f"/v1/edits?{q}")
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (q, r.text)
    for body, param in [({}, "to"), ({"to": "soon"}, "to"), ({"to": time.time() + 3600}, "to"),
                        ({"to": 0, "all": True}, "all")]:
        r = c.post("/v1/edits/rollback", headers=AUTH, json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (body, r.text)
    assert c.delete("/v1/edits/abc", headers=AUTH).status_code == 400
    assert svc.memory.audit() == []


# --- chat -----------------------------------------------------------------------------------------
def test_chat_puts_the_edit_in_the_prompt_reports_it_and_retire_and_rollback(served, cases):
    svc, c = served
    v = cases[0].view("en")
    plain = _plain_answer(svc, v.prompt, "en")
    r = c.post("/v1/edits", headers=AUTH, json={"prompt": v.prompt, "target": v.target_new, "language": "en"})
    eid = r.json()["data"][0]["id"]
    t_added = r.json()["data"][0]["created"]
    prep = svc.prepare(v.prompt)
    assert f"{v.prompt} {v.target_new}" in prep.prompt and "[Updated Information]" in prep.prompt
    out = _ask(c, v.prompt)
    assert [e["id"] for e in out["edits_used"]] == [eid] and out["edits_used"][0]["score"] > 0
    assert out["language"] == "en" and out["object"] == "chat.completion"
    assert out["choices"][0]["finish_reason"] in ("stop", "length")
    assert out["usage"]["prompt_tokens"] > 20 and out["usage"]["total_tokens"] > out["usage"]["prompt_tokens"]
    off = _ask(c, v.prompt, use_memory=False)
    assert off["edits_used"] == [] and off["choices"][0]["message"]["content"] == plain
    time.sleep(0.02)
    c.delete(f"/v1/edits/{eid}", headers=AUTH)
    after = _ask(c, v.prompt)
    assert after["edits_used"] == [] and after["choices"][0]["message"]["content"] == plain
    assert v.target_new not in svc.prepare(v.prompt).prompt
    c.post("/v1/edits/rollback", headers=AUTH, json={"to": t_added + 0.01})
    assert [e["id"] for e in _ask(c, v.prompt)["edits_used"]] == [eid]


def test_streaming_sends_the_same_answer_and_the_edits_first(served, cases):
    svc, c = served
    v = cases[1].view("en")
    eid = c.post("/v1/edits", headers=AUTH, json={"prompt": v.prompt, "target": v.target_new,
                                                  "language": "en"}).json()["data"][0]["id"]
    full = _ask(c, v.prompt)["choices"][0]["message"]["content"]
    body = {"messages": [{"role": "user", "content": v.prompt}], "stream": True,
            "stream_options": {"include_usage": True}}
    with c.stream("POST", "/v1/chat/completions", json=body) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in s.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["edits_used"][0]["id"] == eid and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks if ch["choices"])
    assert text == full and len(chunks) >= 3
    assert [ch["choices"][0]["finish_reason"] for ch in chunks if ch["choices"]][-1] in ("stop", "length")
    assert chunks[-1]["usage"]["completion_tokens"] >= 1


def test_batcher_batches_concurrent_requests_and_hands_errors_back():
    calls = []

    class Echo:
        name = "echo"

        def generate(self, prompts, max_new_tokens, on_text=None):
            calls.append((list(prompts), max_new_tokens))
            if "boom" in prompts:
                raise RuntimeError("engine failed")
            for i, p in enumerate(prompts):
                if on_text:
                    on_text(i, p[:1])
            return [Completion(p.upper(), 1, len(p), "stop") for p in prompts]

    b = Batcher(Echo(), max_batch=8, window=0.2)
    seen = []
    futs = [b.submit(p, 5 if p != "c" else 7, on_text=seen.append) for p in ("a", "bb", "c", "dd")]
    assert [f.result(10).text for f in futs] == ["A", "BB", "C", "DD"]
    # one collection window: grouped by max_new_tokens -> two engine calls, not four
    assert sorted((sorted(p), n) for p, n in calls) == [(["a", "bb", "dd"], 5), (["c"], 7)]
    assert b.stats["largest_batch"] == 3 and sorted(seen) == ["a", "b", "c", "d"]
    bad = b.submit("boom", 5)
    with pytest.raises(RuntimeError, match="engine failed"):
        bad.result(10)
    assert b.submit("e", 5).result(10).text == "E"        # the worker survives a failed batch

    def gone(text):
        raise RuntimeError("client left")

    # a streaming listener that fails (client gone) does not fail the others in its batch
    futs = [b.submit("f", 5, on_text=gone), b.submit("g", 5)]
    assert [f.result(10).text for f in futs] == ["F", "G"]
    b.close()


def test_guess_language():
    from xke.serve.service import guess_language
    assert guess_language("阿达出生在哪里？") == "zh"
    assert guess_language("エイダはどこで生まれましたか") == "ja"
    assert guess_language("Где родилась Ада?") == "ru"
    assert guess_language("Where was Ada born?") == "en"
    assert guess_language("Wo wurde Ada geboren?", default="de") == "de"


# --- store: audit and old files -------------------------------------------------------------------------
def test_memory_files_from_before_the_audit_table_still_open(tmp_path):
    old_schema = """CREATE TABLE edits (id INTEGER PRIMARY KEY AUTOINCREMENT, lang TEXT NOT NULL, prompt TEXT NOT NULL,
        target_new TEXT NOT NULL, subject TEXT NOT NULL DEFAULT '', target_old TEXT, case_id TEXT, created REAL NOT NULL,
        active INTEGER NOT NULL DEFAULT 1, retired REAL, batch TEXT);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('generation', '1'), ('schema', '1'), ('uuid', 'abc');
        INSERT INTO edits (lang, prompt, target_new, created) VALUES ('en', 'Where?', 'Here', 100.0);"""
    p = tmp_path / "old.sqlite"
    con = sqlite3.connect(p)
    con.executescript(old_schema)
    con.close()
    with EditStore(p) as s:
        assert [e.prompt for e in s.list()] == ["Where?"] and s.audit_log() == []
        i = s.add(MemoryEdit(lang="zh", prompt="哪里？", target_new="这里"), actor="carol")
        s.retire([1, i], actor="dave")
        s.add(MemoryEdit(lang="en", prompt="untracked", target_new="x"))      # no actor: no audit row
        log = s.audit_log()
        assert [(a.actor, a.action, a.edit_ids) for a in log] == [("carol", "add", [i]), ("dave", "retire", [1, i])]
        assert log[0].detail == {"edits": [{"lang": "zh", "prompt": "哪里？", "target_new": "这里"}]}
        assert log[0].time <= log[1].time


# --- live server: concurrent writers, batching, the openai client, restart ---------------------------------
def test_concurrent_writers_and_batched_readers_on_a_live_server(lm, world, cases, tmp_path):
    import httpx
    svc = _service(lm, world, tmp_path / "mem.sqlite", batch_window=0.05)
    srv = start_server(create_app(svc, KeyRing({KEY: "alice"})))
    assert srv.host == "127.0.0.1" and srv.port > 0
    acked: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()

    def writer(w):
        with httpx.Client(base_url=srv.url, headers=AUTH, timeout=60) as cl:
            for k in range(10):
                r = cl.post("/v1/edits", json={"prompt": f"writer {w} fact {k}?", "target": f"v{w}-{k}",
                                               "language": "en"})
                with lock:
                    (acked.extend(e["id"] for e in r.json()["data"]) if r.status_code == 201
                     else errors.append(r.text))

    questions = [c.view("zh").prompt for c in cases[:6]]
    answers: dict[str, str] = {}

    def reader(q):
        with httpx.Client(base_url=srv.url, timeout=120) as cl:
            r = cl.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": q}],
                                                      "use_memory": False})
            with lock:
                answers[q] = r.json()["choices"][0]["message"]["content"]

    try:
        threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
        threads += [threading.Thread(target=reader, args=(q,)) for q in questions]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors and len(acked) == 60 and len(set(acked)) == 60
        stored = {e.id: e.target_new for e in svc.memory.list()}
        assert set(acked) <= set(stored) and len(stored) == 60
        assert sum(a.action == "add" for a in svc.memory.audit(limit=1000)) == 60
        assert svc.batcher.stats["largest_batch"] >= 2               # concurrent questions were batched
        for q in questions:                                           # ... and batching changes no answer
            assert answers[q] == _plain_answer(svc, q, "zh")
    finally:
        srv.stop()
        svc.close()


@pytest.fixture(scope="module")
def world_retriever(world):
    """The shipped tiny world's retriever (test_demo checks that training rebuilds it bit for bit)."""
    return Path(world) / "retriever"


@pytest.mark.slow
def test_openai_client_en_edit_zh_question_retire_rollback_restart(lm, world, cases, world_retriever, tmp_path):
    """The acceptance flow on the tiny world: an English edit through the API, the Chinese question through
    the official openai client; the edit (id, score) is used and in the X-KDE prompt; retired, it is not; rolled
    back, it is again; after a restart over the same memory file nothing is lost."""
    openai = pytest.importorskip("openai")
    import httpx
    mem = tmp_path / "memory.sqlite"
    case = cases[2]
    en, zh = case.view("en"), case.view("zh")

    def start():
        svc = _service(lm, world, mem, retriever="dense", retriever_path=str(world_retriever), threshold="auto")
        return svc, start_server(create_app(svc, KeyRing({KEY: "ops"})))

    svc, srv = start()
    try:
        client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key=KEY, max_retries=0)
        assert [m.id for m in client.models.list().data] == [svc.model_id]
        plain = client.chat.completions.create(model=svc.model_id, messages=[{"role": "user", "content": zh.prompt}])
        assert plain.edits_used == []
        r = httpx.post(f"{srv.url}/v1/edits", headers=AUTH, json={"prompt": en.prompt, "target": en.target_new,
                                                                    "subject": en.subject, "language": "en"})
        eid, t_added = r.json()["data"][0]["id"], r.json()["data"][0]["created"]
        resp = client.chat.completions.create(model=svc.model_id, messages=[{"role": "user", "content": zh.prompt}])
        assert resp.language == "zh"
        assert [e["id"] for e in resp.edits_used] == [eid] and resp.edits_used[0]["score"] >= svc.method.score_threshold()
        prompt = svc.prepare(zh.prompt).prompt
        assert f"{en.prompt} {en.target_new}" in prompt and "respond to the subsequent query in Chinese" in prompt
        stream = client.chat.completions.create(model=svc.model_id, stream=True,
                                                messages=[{"role": "user", "content": zh.prompt}])
        chunks = list(stream)
        assert chunks[0].edits_used[0]["id"] == eid
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == \
            resp.choices[0].message.content
        time.sleep(0.02)
        assert httpx.delete(f"{srv.url}/v1/edits/{eid}", headers=AUTH).status_code == 200
        gone = client.chat.completions.create(model=svc.model_id, messages=[{"role": "user", "content": zh.prompt}])
        assert gone.edits_used == [] and gone.choices[0].message.content == plain.choices[0].message.content
        httpx.post(f"{srv.url}/v1/edits/rollback", headers=AUTH, json={"to": t_added + 0.01})
        back = client.chat.completions.create(model=svc.model_id, messages=[{"role": "user", "content": zh.prompt}])
        assert [e["id"] for e in back.edits_used] == [eid]
        assert back.choices[0].message.content == resp.choices[0].message.content
    finally:
        srv.stop()
        svc.close()
    svc, srv = start()                                              # restart over the same file
    try:
        client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key=KEY, max_retries=0)
        again = client.chat.completions.create(model=svc.model_id, messages=[{"role": "user", "content": zh.prompt}])
        assert [e["id"] for e in again.edits_used] == [eid]
        assert again.choices[0].message.content == resp.choices[0].message.content
        log = httpx.get(f"{srv.url}/v1/audit", headers=AUTH).json()["data"]
        assert [a["action"] for a in log] == ["add", "retire", "rollback"] and log[0]["actor"].startswith("ops@")
    finally:
        srv.stop()
        svc.close()


# --- CLI -----------------------------------------------------------------------------------------------
def test_cli_keys_and_vllm_without_vllm(tmp_path, capsys):
    import importlib.util

    from xke.cli import build_parser, main
    from xke.errors import ConfigError
    args = build_parser().parse_args(["serve", "--model", "m", "--memory", "x.sqlite"])
    assert (args.host, args.port, args.engine, args.keyed_reads) == ("127.0.0.1", 8000, "transformers", False)
    from xke.serve.commands import parse_keys
    keys, generated = parse_keys(["ops=abcdefgh12", "zyxwvuts98"], None)
    assert keys["abcdefgh12"] == "ops" and keys["zyxwvuts98"].startswith("key-") and not generated
    assert list(parse_keys(None, "k1-aaaaaaaa, k2-bbbbbbbb")[0]) == ["k1-aaaaaaaa", "k2-bbbbbbbb"]
    keys, generated = parse_keys(None, None)
    assert generated and len(next(iter(keys))) >= 24
    with pytest.raises(ConfigError, match="too short"):
        parse_keys(["abc"], None)
    if importlib.util.find_spec("vllm") is None:
        rc = main(["serve", "--model", "tiny-llama", "--memory", str(tmp_path / "m.sqlite"), "--engine", "vllm",
                   "--api-key", "abcdefgh12"])
        assert rc == 2 and "vLLM" in capsys.readouterr().err
    rc = main(["serve", "--model", "tiny-llama", "--memory", str(tmp_path / "m.sqlite"), "--threshold", "high"])
    assert rc == 2 and "--threshold" in capsys.readouterr().err


def test_load_benchmark_runs_and_checks_every_acknowledged_edit(world, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location("serve_load", Path(__file__).parents[1] / "benchmarks" /
                                                  "serve_load.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rc = mod.main(["--model", f"world:{world}", "--requests", "24", "--clients", "4", "--write-fraction", "0.5",
                   "--max-tokens", "4"])
    out = capsys.readouterr().out
    assert rc == 0 and "requests/s" in out and "p95" in out and "(all)" in out
    with pytest.raises(SystemExit):
        mod.main(["--url", "http://10.1.2.3:8000", "--api-key", "k"])      # loopback only
