"""The OpenAI-compatible LLM client against a local fake server: caching, retries, concurrency bound,
and the Appendix A steps end to end (generation, judging, scoring, translation)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from xke.train.llm import (LLMClient, LLMConfig, LLMError, LLMSteps, StepInput, load_prompt, parse_judge,
                           parse_out_of_scope, parse_scores, render_prompt)


class FakeServer:
    """A tiny OpenAI-compatible ``/v1/chat/completions`` server on 127.0.0.1."""

    def __init__(self, *, delay: float = 0.0, fail_first: int = 0, fail_status: int = 503, reply=None, reject=None):
        self.delay, self.fail_first, self.fail_status = delay, fail_first, fail_status
        self.reject = reject or (lambda msgs: False)  # requests answered 400
        self.reply = reply or (lambda msgs: "ok: " + msgs[-1]["content"][:20])
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        srv = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                n = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(n))
                with srv.lock:
                    srv.requests += 1
                    k = srv.requests
                    srv.in_flight += 1
                    srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
                try:
                    time.sleep(srv.delay)
                    if srv.reject(body["messages"]):
                        self._send(400, {"error": {"message": "rejected", "type": "invalid_request_error"}})
                        return
                    if k <= srv.fail_first:
                        self._send(srv.fail_status, {"error": {"message": "try again", "type": "server_error"}})
                        return
                    text = srv.reply(body["messages"])
                    self._send(200, {"id": f"c{k}", "object": "chat.completion", "created": 0, "model": body["model"],
                                     "choices": [{"index": 0, "finish_reason": "stop",
                                                  "message": {"role": "assistant", "content": text}}],
                                     "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})
                finally:
                    with srv.lock:
                        srv.in_flight -= 1

            def _send(self, code, obj):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server_factory():
    made = []

    def make(**kw):
        s = FakeServer(**kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def _cfg(url, tmp_path, **kw):
    base = dict(backend="openai", base_url=url, model="fake-model", max_retries=3, backoff_s=0.01,
                backoff_max_s=0.05, timeout_s=10, cache_dir=str(tmp_path / "cache"), progress=False,
                price_input_per_mtok=1.0, price_output_per_mtok=2.0)
    base.update(kw)
    return LLMConfig(**base)


def test_cache_keyed_by_request(server_factory, tmp_path):
    srv = server_factory()
    c = LLMClient(_cfg(srv.url, tmp_path))
    m = [{"role": "user", "content": "hello"}]
    a = c.chat(m)
    b = c.chat(m)
    assert a == b == "ok: hello" and srv.requests == 1 and c.stats.cached == 1
    c.chat(m, temperature=0.1)  # other parameters -> another request
    c.chat([{"role": "user", "content": "other"}])
    assert srv.requests == 3
    # a new client (new process) reads the disk cache
    c2 = LLMClient(_cfg(srv.url, tmp_path))
    assert c2.chat(m) == a and srv.requests == 3
    assert c.stats.input_tokens == 30 and c.stats.output_tokens == 15
    assert abs(c.stats.cost(c.cfg) - (30 * 1 + 15 * 2) / 1e6) < 1e-12
    assert "cost=$" in c.progress_line()


def test_retries_with_backoff(server_factory, tmp_path):
    srv = server_factory(fail_first=2, fail_status=503)
    c = LLMClient(_cfg(srv.url, tmp_path))
    assert c.chat([{"role": "user", "content": "x"}]) == "ok: x"
    assert srv.requests == 3 and c.stats.retries == 2
    srv429 = server_factory(fail_first=1, fail_status=429)
    c = LLMClient(_cfg(srv429.url, tmp_path / "b"))
    assert c.chat([{"role": "user", "content": "y"}]) == "ok: y" and c.stats.retries == 1


def test_gives_up_and_non_retryable(server_factory, tmp_path):
    srv = server_factory(fail_first=100, fail_status=500)
    c = LLMClient(_cfg(srv.url, tmp_path, max_retries=2))
    with pytest.raises(LLMError, match="3 attempt"):
        c.chat([{"role": "user", "content": "x"}])
    assert srv.requests == 3
    bad = server_factory(fail_first=100, fail_status=400)
    c = LLMClient(_cfg(bad.url, tmp_path / "b"))
    with pytest.raises(LLMError):
        c.chat([{"role": "user", "content": "x"}])
    assert bad.requests == 1  # a 400 is not retried
    # chat_many keeps going and reports None for failures when the failure share allows it
    c = LLMClient(_cfg(bad.url, tmp_path / "c", max_failure_share=1.0, max_consecutive_failures=0))
    out = c.chat_many([[{"role": "user", "content": str(i)}] for i in range(3)])
    assert out == [None, None, None] and c.stats.failures >= 3


def test_concurrency_bound(server_factory, tmp_path):
    srv = server_factory(delay=0.1)
    c = LLMClient(_cfg(srv.url, tmp_path, max_concurrency=3))
    t0 = time.perf_counter()
    out = c.chat_many([[{"role": "user", "content": f"q{i}"}] for i in range(12)])
    dt = time.perf_counter() - t0
    assert out == [f"ok: q{i}" for i in range(12)]  # in order
    assert srv.max_in_flight <= 3
    assert srv.max_in_flight >= 2  # actually concurrent
    assert dt < 12 * 0.1  # faster than serial


def test_prompt_templates_and_parsers():
    for name in ("query_generation", "answer_generation", "out_of_scope", "judge", "scoring", "translation"):
        assert load_prompt(name).strip()
    p = render_prompt("query_generation", instruct="Where was Bob born? Paris", subject="Bob")
    assert p.endswith("[Generated Question]:\n") or p.rstrip().endswith("[Generated Question]:")
    assert "<subject>" not in p and "Please generate a question related to Bob." in p
    assert "[Edit description]: Who is Chris Klemmer affiliated with?" in p  # the paper's few-shot examples
    assert parse_judge("The answer uses it. [T]") is True and parse_judge("[F]") is False and parse_judge("?") is None
    s = parse_scores("[Sentence complexity: 6; Vocabulary richness: 7; Faithfulness: 9; Overall score: 9]")
    assert s["overall"] == pytest.approx((6 + 7 + 9) / 3, abs=1e-3)  # recomputed, not the judge's 9
    assert parse_out_of_scope("Irrelevant attribute recalled: job\nNew question: What is Bob's job?\n"
                              "New answer: painter") == ("What is Bob's job?", "painter", "job")


def _steps_reply(msgs):
    t = msgs[-1]["content"]
    if t.startswith("Translate"):
        text = t.split("[Text]: ", 1)[1].split("\n[Translation]")[0]
        return "ZH(" + text + ")"
    if "[Generated Question]:" in t and "Please generate a question" in t and "[Generated Answer]" not in t:
        return "[Generated Question]: Which city is the birthplace of Bob?"
    if "[Generated Answer]" in t:
        return "Bob was born in Paris, a city on the Seine."
    if "Irrelevant attribute" in t:
        return "Irrelevant attribute recalled: occupation\nNew question: What is Bob's job?\nNew answer: painter"
    if "fair judge and determine" in t:
        return "It follows the description. [T]"
    if "rate the sentence" in t:
        return "[Sentence complexity: 7; Vocabulary richness: 7; Faithfulness: 10; Overall score: 8]"
    return "?"


def test_llm_steps_build_data_end_to_end(server_factory, tmp_path):
    from xke.train.sources import Fact, FactView
    from xke.train.xeit_data import DataConfig, build_xeit_dataset, read_rows

    srv = server_factory(reply=_steps_reply)
    steps = LLMSteps(LLMClient(_cfg(srv.url, tmp_path, max_concurrency=4)))
    it = StepInput(subject="Bob", prompt="Where was Bob born?", target_new="Paris", lang="en")
    assert steps.complex_query([it]) == ["Which city is the birthplace of Bob?"]
    assert steps.out_of_scope([it]) == [("What is Bob's job?", "painter")]
    assert steps.judge([it]) == [True] and steps.score([it]) == [pytest.approx(8.0)]
    facts = [Fact(fact_id=f"f{i}", source="test",
                  views={"en": FactView(subject=f"Bob{i}", prompt=f"Where was Bob{i} born?", target_new="Paris",
                                        target_old="London", unrelated=[("Where was Ann born?", "Rome")])})
             for i in range(4)]
    cfg = DataConfig(langs=["en", "zh"], generate_out_of_scope=True, long_answers=True, val_fraction=0.0)
    stats = build_xeit_dataset(facts, cfg, tmp_path / "data", steps=steps, quiet=True)
    rows = read_rows(tmp_path / "data" / "train.jsonl")
    aug = stats["augment"]
    assert aug["translated_views"] == 4 and aug["complex_queries"] == 4 and aug["long_answers"] == 4
    zh = [r for r in rows if r["tgt_lang"] == "zh"]
    assert zh and any(r["query"].startswith("ZH(") for r in zh)  # translated queries in the target language
    assert any(r["kind"] == "long" for r in rows)
    assert stats["llm"]["requests"] > 0
    n = srv.requests
    build_xeit_dataset(facts, cfg, tmp_path / "data2", steps=LLMSteps(LLMClient(_cfg(srv.url, tmp_path))),
                       quiet=True)
    assert srv.requests == n  # a rebuild is served from the cache


def _free_port() -> int:
    import socket

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


def test_dead_endpoint_is_detected_before_any_retry(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there: connection refused
    c = LLMClient(_cfg(url, tmp_path, max_retries=5, backoff_s=1.0))
    t0 = time.perf_counter()
    with pytest.raises(LLMError, match="cannot reach the LLM endpoint http://127.0.0.1"):
        c.chat_many([[{"role": "user", "content": str(i)}] for i in range(50)])
    assert time.perf_counter() - t0 < 5 and c.stats.retries == 0


def test_consecutive_failures_stop_the_batch(server_factory, tmp_path):
    srv = server_factory(fail_first=10_000, fail_status=400)  # every request fails, not retryable
    c = LLMClient(_cfg(srv.url, tmp_path, max_consecutive_failures=4, max_concurrency=1))
    with pytest.raises(LLMError, match="4 requests in a row"):
        c.chat_many([[{"role": "user", "content": str(i)}] for i in range(40)])
    assert srv.requests == 4  # the rest never reached the server


def test_failure_share_above_the_limit_is_an_error(server_factory, tmp_path):
    # the server refuses (400, not retried) two of ten prompts: 20% failed for good
    srv = server_factory(reply=lambda msgs: "ok", reject=lambda msgs: msgs[-1]["content"] in {"1", "5"})
    reqs = [[{"role": "user", "content": str(i)}] for i in range(10)]
    c = LLMClient(_cfg(srv.url, tmp_path, max_failure_share=0.1, max_retries=0))
    with pytest.raises(LLMError, match=r"2 of 10 requests .* failed for good \(20.0% > llm.max_failure_share 10.0%\)"):
        c.chat_many(reqs)
    ok = LLMClient(_cfg(srv.url, tmp_path / "b", max_failure_share=0.25, max_retries=0))
    out = ok.chat_many(reqs)
    assert out.count(None) == 2 and out[1] is None and out[0] == "ok"


def test_cache_key_includes_the_base_url(server_factory, tmp_path):
    a, b = server_factory(reply=lambda m: "from a"), server_factory(reply=lambda m: "from b")
    m = [{"role": "user", "content": "same"}]
    assert LLMClient(_cfg(a.url, tmp_path)).chat(m) == "from a"
    assert LLMClient(_cfg(b.url, tmp_path)).chat(m) == "from b"  # same cache dir, another endpoint
    assert a.requests == 1 and b.requests == 1
