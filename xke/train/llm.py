"""LLM-backed data-construction steps, and the offline backend that builds the same structures.

:class:`LLMClient` calls any OpenAI-compatible chat endpoint through the
``openai`` package (a local vLLM server, DeepSeek, OpenAI...). Base URL, model
and key come from :class:`LLMConfig` or the environment (``XKE_LLM_BASE_URL``
/ ``OPENAI_BASE_URL``, ``XKE_LLM_MODEL``, ``XKE_LLM_API_KEY`` /
``OPENAI_API_KEY``). Every answer is cached on disk under a key made of the
request (endpoint base URL, model, messages, sampling parameters), so a rerun
of a data build costs nothing; at most ``max_concurrency`` requests are in
flight; transient failures (rate limits, timeouts, 5xx) are retried with
exponential backoff; a tqdm bar shows progress, tokens and the estimated cost.

A dead endpoint is caught early: before its first uncached request the client
probes the server (``GET /models``; a refused connection or a rejected key is an
:class:`LLMError` at once), a batch stops after ``max_consecutive_failures``
failures in a row, and a batch in which more than ``max_failure_share`` of the
requests failed for good raises instead of silently dropping those rows (the
CLI exits with status 2).

The X-KDE data steps (paper, Appendix A) use the prompt templates in
``xke/train/prompts/*.txt``:

============================  ==========================================
step                          template
============================  ==========================================
complex in-scope query        ``query_generation.txt``
long answer                   ``answer_generation.txt``
out-of-scope (irrelevant      ``out_of_scope.txt``
attribute) question + answer
quality judge ([T]/[F])       ``judge.txt``
quality scoring (3 x 1-10)    ``scoring.txt``
translation                   ``translation.txt`` (not printed in the paper)
============================  ==========================================

:class:`LLMSteps` runs them through an :class:`LLMClient`;
:class:`OfflineSteps` returns the same structures from ground truth a source
attached to each fact view (``FactView.hints``: the toy world knows every
paraphrase, other attribute and translation), so tests and the demo need no
server.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Sequence

from ..data.languages import language_name
from ..errors import ConfigError, XkeError

PROMPT_NAMES = ("query_generation", "answer_generation", "out_of_scope", "judge", "scoring", "translation")


class LLMError(XkeError):
    """A request to the chat endpoint failed for good (after retries, or a non-retryable error)."""


# ----------------------------------------------------------------------------- config


@dataclass
class LLMConfig:
    """How data construction reaches a chat model.

    ``backend``: ``offline`` (ground truth from the source; no network) or
    ``openai`` (any OpenAI-compatible endpoint). Empty ``base_url``/``model``
    fall back to the environment (see module docstring). Prices are per
    million tokens and only feed the cost display.
    """

    backend: Literal["offline", "openai"] = "offline"
    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "XKE_LLM_API_KEY"
    max_concurrency: int = 8
    max_retries: int = 5
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    timeout_s: float = 120.0
    temperature: float = 0.7
    max_tokens: int = 512
    cache_dir: str | None = None
    price_input_per_mtok: float = 0.0
    price_output_per_mtok: float = 0.0
    progress: bool = True
    judge_filter: bool = True
    min_quality_score: float = 6.0
    #: probe the endpoint before the first uncached request
    probe: bool = True
    #: stop a batch after this many requests in a row failed for good (0 = never)
    max_consecutive_failures: int = 10
    #: a batch in which a larger share of requests failed for good is an error, not missing rows
    max_failure_share: float = 0.02

    def validate(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError("llm.max_concurrency must be >= 1")
        if self.max_retries < 0:
            raise ValueError("llm.max_retries must be >= 0")
        if self.backoff_s < 0 or self.backoff_max_s < 0:
            raise ValueError("llm backoff must be >= 0")
        if self.max_consecutive_failures < 0:
            raise ValueError("llm.max_consecutive_failures must be >= 0")
        if not 0 <= self.max_failure_share <= 1:
            raise ValueError("llm.max_failure_share must be in [0, 1]")

    def resolved(self) -> tuple[str | None, str, str]:
        """(base_url, model, api_key) with environment fallbacks; clear error when no model is set."""
        base_url = self.base_url or os.environ.get("XKE_LLM_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
        model = self.model or os.environ.get("XKE_LLM_MODEL")
        if not model:
            raise ConfigError("llm backend 'openai' needs a model: set llm.model in the config or XKE_LLM_MODEL")
        key = (os.environ.get(self.api_key_env) or os.environ.get("XKE_LLM_API_KEY")
               or os.environ.get("OPENAI_API_KEY") or "EMPTY")  # local vLLM servers accept any key
        return base_url, model, key


# ----------------------------------------------------------------------------- client


@dataclass
class UsageStats:
    requests: int = 0
    cached: int = 0
    retries: int = 0
    failures: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def cost(self, cfg: LLMConfig) -> float:
        return (self.input_tokens * cfg.price_input_per_mtok + self.output_tokens * cfg.price_output_per_mtok) / 1e6


def _retryable(exc: BaseException) -> bool:
    import openai

    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError,
                        openai.InternalServerError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


def _retry_after(exc: BaseException) -> float | None:
    resp = getattr(exc, "response", None)
    headers = getattr(resp, "headers", None)
    if not headers:
        return None
    val = headers.get("retry-after")
    try:
        return float(val) if val is not None else None
    except ValueError:
        return None


class LLMClient:
    """Cached, retrying, concurrency-bounded client of an OpenAI-compatible chat endpoint."""

    def __init__(self, cfg: LLMConfig, *, client: Any = None):
        self.cfg = cfg
        self.base_url, self.model, key = cfg.resolved()
        if client is None:
            import openai

            client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=cfg.timeout_s, max_retries=0)
        self._client = client
        from ..paths import cache_dir

        self.cache_path = Path(cfg.cache_dir) if cfg.cache_dir else cache_dir("llm")
        self.cache_path.mkdir(parents=True, exist_ok=True)
        self.stats = UsageStats()
        self._lock = threading.Lock()
        self._sem = threading.BoundedSemaphore(cfg.max_concurrency)
        self._probed = not cfg.probe
        self._probe_lock = threading.Lock()
        self._consecutive = 0
        self._aborted: str | None = None

    def where(self) -> str:
        return f"{self.base_url or 'the default endpoint'} (model {self.model})"

    def _ensure_probed(self) -> None:
        """Probe once before the first uncached request; other threads wait for it. A failed probe (or a
        batch stopped for consecutive failures) fails every later request at once."""
        if self._aborted:
            raise LLMError(self._aborted)
        if self._probed:
            return
        with self._probe_lock:
            if not self._probed:
                try:
                    self.probe()
                except LLMError as e:
                    self._aborted = str(e)
                    raise
                self._probed = True
        if self._aborted:
            raise LLMError(self._aborted)

    def probe(self) -> None:
        """Check that the endpoint answers at all (``GET /models``): a refused connection, a timeout or a
        rejected API key is an :class:`LLMError` now rather than hours of retries. Any other HTTP answer
        means a server is there."""
        import openai

        try:
            self._client.models.list()
        except (openai.APIConnectionError, openai.APITimeoutError) as e:
            raise LLMError(f"cannot reach the LLM endpoint {self.where()}: {e}. Start the server or fix "
                           "llm.base_url / XKE_LLM_BASE_URL") from e
        except openai.AuthenticationError as e:
            raise LLMError(f"the LLM endpoint {self.where()} rejected the API key: {e}") from e
        except Exception:  # noqa: BLE001 - a server that answers (even 404 on /models) is reachable
            pass

    # --- cache
    def request_params(self, **params) -> dict[str, Any]:
        p = {"temperature": self.cfg.temperature, "max_tokens": self.cfg.max_tokens}
        p.update({k: v for k, v in params.items() if v is not None})
        return p

    def cache_key(self, messages: Sequence[dict], params: dict[str, Any]) -> str:
        blob = json.dumps({"base_url": self.base_url, "model": self.model, "messages": list(messages), "params": params},
                          sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _cache_file(self, key: str) -> Path:
        return self.cache_path / key[:2] / f"{key}.json"

    def _cache_get(self, key: str) -> str | None:
        f = self._cache_file(key)
        if not f.exists():
            return None
        try:
            return json.loads(f.read_text(encoding="utf-8"))["response"]
        except (OSError, ValueError, KeyError):
            return None  # a damaged entry is simply asked again

    def _cache_put(self, key: str, messages, params, text: str, usage: dict) -> None:
        f = self._cache_file(key)
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(json.dumps({"model": self.model, "messages": list(messages), "params": params,
                                   "response": text, "usage": usage}, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, f)  # atomic: concurrent writers of the same key both leave a whole file

    # --- calls
    def chat(self, messages: Sequence[dict], **params) -> str:
        """The assistant's reply to ``messages`` (cached; retried on transient errors)."""
        p = self.request_params(**params)
        key = self.cache_key(messages, p)
        hit = self._cache_get(key)
        if hit is not None:
            with self._lock:
                self.stats.cached += 1
            return hit
        self._ensure_probed()
        attempt = 0
        while True:
            try:
                with self._sem:
                    resp = self._client.chat.completions.create(model=self.model, messages=list(messages), **p)
                break
            except Exception as e:  # noqa: BLE001 - classified below
                if not _retryable(e) or attempt >= self.cfg.max_retries:
                    msg = f"chat request to {self.where()} failed after {attempt + 1} attempt(s): {e}"
                    with self._lock:
                        self.stats.failures += 1
                        self._consecutive += 1
                        n = self.cfg.max_consecutive_failures
                        if n and self._consecutive >= n and not self._aborted:
                            self._aborted = (f"stopped: {self._consecutive} requests in a row to {self.where()} "
                                             f"failed (llm.max_consecutive_failures); last error: {e}")
                    raise LLMError(msg) from e
                delay = min(self.cfg.backoff_max_s, self.cfg.backoff_s * (2 ** attempt))
                delay = delay * (0.5 + random.random() / 2)
                ra = _retry_after(e)
                if ra is not None:
                    delay = min(self.cfg.backoff_max_s, max(delay, ra))
                with self._lock:
                    self.stats.retries += 1
                attempt += 1
                time.sleep(delay)
        text = (resp.choices[0].message.content or "") if resp.choices else ""
        usage = {}
        if getattr(resp, "usage", None) is not None:
            usage = {"prompt_tokens": resp.usage.prompt_tokens or 0,
                     "completion_tokens": resp.usage.completion_tokens or 0}
        with self._lock:
            self._consecutive = 0
            self.stats.requests += 1
            self.stats.input_tokens += usage.get("prompt_tokens", 0)
            self.stats.output_tokens += usage.get("completion_tokens", 0)
        self._cache_put(key, messages, p, text, usage)
        return text

    def chat_many(self, requests: Sequence[Sequence[dict]], *, desc: str = "llm",
                  on_error: Literal["raise", "none"] = "none", **params) -> list[str | None]:
        """Replies to many requests, ``max_concurrency`` at a time, in order.

        With ``on_error="none"`` a request that fails for good gives ``None``
        (counted in ``stats.failures``) unless more than ``max_failure_share`` of them fail, or
        ``max_consecutive_failures`` fail in a row (:class:`LLMError`); with ``"raise"`` the first
        failure is raised.
        """
        from tqdm.auto import tqdm

        out: list[str | None] = [None] * len(requests)
        failed = [0]
        bar = tqdm(total=len(requests), desc=desc, disable=not self.cfg.progress, leave=False)

        def one(i: int):
            try:
                out[i] = self.chat(requests[i], **params)
            except LLMError:
                with self._lock:
                    failed[0] += 1
                if on_error == "raise":
                    raise
                if self._aborted:
                    raise LLMError(self._aborted) from None
            finally:
                with self._lock:
                    bar.update(1)
                    bar.set_postfix_str(self.progress_line(), refresh=False)

        try:
            with ThreadPoolExecutor(max_workers=self.cfg.max_concurrency) as ex:
                futures = [ex.submit(one, i) for i in range(len(requests))]
                for f in futures:
                    f.result()
        except LLMError:
            for f in futures:
                f.cancel()
            raise
        finally:
            bar.close()
        share = failed[0] / max(1, len(requests))
        if share > self.cfg.max_failure_share:
            raise LLMError(f"{desc}: {failed[0]} of {len(requests)} requests to {self.where()} failed for good "
                           f"({share:.1%} > llm.max_failure_share {self.cfg.max_failure_share:.1%}); their rows "
                           "would be missing from the data. Fix the endpoint and rerun (answers are cached)")
        return out

    def progress_line(self) -> str:
        s = self.stats
        return (f"req={s.requests} cached={s.cached} retries={s.retries} fail={s.failures} "
                f"tok in={s.input_tokens} out={s.output_tokens} cost=${s.cost(self.cfg):.4f}")


# ----------------------------------------------------------------------------- prompt templates


def load_prompt(name: str) -> str:
    """The text of template ``xke/train/prompts/<name>.txt``."""
    if name not in PROMPT_NAMES:
        raise ConfigError(f"unknown prompt template {name!r}; available: {', '.join(PROMPT_NAMES)}")
    return (resources.files("xke") / "train" / "prompts" / f"{name}.txt").read_text(encoding="utf-8")


def render_prompt(name: str, **fields: str) -> str:
    """Template ``name`` with ``<field>`` placeholders filled (``new_answer`` fills ``<new answer>``)."""
    text = load_prompt(name)
    for k, v in fields.items():
        text = text.replace(f"<{k.replace('_', ' ')}>", str(v))
    left = re.findall(r"<(instruct|subject|question|answer|new answer|text|source language|target language)>",
                      text)
    if left:
        raise ConfigError(f"prompt {name}: placeholder(s) {sorted(set(left))} not filled")
    return text


def parse_generated_line(text: str, label: str | None = None) -> str | None:
    """First non-empty line of a reply, without a leading ``[label]:``/``label:`` echo."""
    if text is None:
        return None
    t = text.strip()
    if label:
        m = re.search(rf"\[?{re.escape(label)}\]?\s*:\s*(.+)", t, flags=re.I | re.S)
        if m:
            t = m.group(1).strip()
    for line in t.splitlines():
        line = line.strip().strip('"').strip()
        if line:
            return line
    return None


def parse_judge(text: str | None) -> bool | None:
    """``[T]`` -> True, ``[F]`` -> False (the last marker wins), neither -> None."""
    if not text:
        return None
    marks = re.findall(r"\[(T|F)\]", text)
    return None if not marks else marks[-1] == "T"


def parse_scores(text: str | None) -> dict[str, float] | None:
    """The three 1-10 criteria and their average from a scoring reply (``None`` if unparsable).

    The overall score is recomputed as the mean of the three criteria (the
    judge's own arithmetic is not trusted)."""
    if not text:
        return None
    pats = {"complexity": r"complexity\s*:\s*([0-9]+(?:\.[0-9]+)?)",
            "richness": r"richness\s*:\s*([0-9]+(?:\.[0-9]+)?)",
            "faithfulness": r"faithfulness\s*:\s*([0-9]+(?:\.[0-9]+)?)"}
    out = {}
    for k, p in pats.items():
        m = re.search(p, text, flags=re.I)
        if not m:
            return None
        out[k] = min(10.0, max(0.0, float(m.group(1))))
    out["overall"] = round(sum(out.values()) / 3, 4)
    return out


def parse_out_of_scope(text: str | None) -> tuple[str, str, str | None] | None:
    """(question, answer, attribute) from an out-of-scope reply, or None."""
    if not text:
        return None
    q = re.search(r"New question\s*:\s*(.+)", text, flags=re.I)
    a = re.search(r"New answer\s*:\s*(.+)", text, flags=re.I)
    attr = re.search(r"Irrelevant attribute recalled\s*:\s*(.+)", text, flags=re.I)
    if not q or not a:
        return None
    return q.group(1).strip(), a.group(1).strip(), (attr.group(1).strip() if attr else None)


# ----------------------------------------------------------------------------- steps


@dataclass
class StepInput:
    """One edit in one language as a data step sees it."""

    subject: str
    prompt: str
    target_new: str
    lang: str
    question: str | None = None      # for long answers / judging: the question being answered
    answer: str | None = None        # for judging / scoring
    hints: dict[str, Any] = field(default_factory=dict)

    @property
    def instruct(self) -> str:
        return f"{self.prompt.rstrip()} {self.target_new.strip()}"


class LLMSteps:
    """The Appendix A steps through an :class:`LLMClient`."""

    offline = False

    def __init__(self, client: LLMClient):
        self.client = client

    def _ask(self, prompts: list[str], desc: str) -> list[str | None]:
        return self.client.chat_many([[{"role": "user", "content": p}] for p in prompts], desc=desc)

    def complex_query(self, items: Sequence[StepInput]) -> list[str | None]:
        outs = self._ask([render_prompt("query_generation", instruct=it.instruct, subject=it.subject)
                          for it in items], "complex queries")
        return [parse_generated_line(o, "Generated Question") for o in outs]

    def long_answer(self, items: Sequence[StepInput]) -> list[str | None]:
        outs = self._ask([render_prompt("answer_generation", instruct=it.instruct, question=it.question or it.prompt,
                                        subject=it.subject, new_answer=it.target_new) for it in items],
                         "long answers")
        return [(re.sub(r"^\s*\[?Generated Answer\]?\s*:\s*", "", o, flags=re.I).strip() or None) if o else None
                for o in outs]

    def out_of_scope(self, items: Sequence[StepInput]) -> list[tuple[str, str] | None]:
        outs = self._ask([render_prompt("out_of_scope", question=it.prompt, subject=it.subject,
                                        new_answer=it.target_new) for it in items], "out-of-scope")
        res = []
        for o in outs:
            p = parse_out_of_scope(o)
            res.append((p[0], p[1]) if p else None)
        return res

    def judge(self, items: Sequence[StepInput]) -> list[bool | None]:
        outs = self._ask([render_prompt("judge", instruct=it.instruct, question=it.question or it.prompt,
                                        answer=it.answer or it.target_new) for it in items], "judge")
        return [parse_judge(o) for o in outs]

    def score(self, items: Sequence[StepInput]) -> list[float | None]:
        outs = self._ask([render_prompt("scoring", instruct=it.instruct, question=it.question or it.prompt,
                                        answer=it.answer or it.target_new) for it in items], "scoring")
        res = []
        for o in outs:
            s = parse_scores(o)
            res.append(s["overall"] if s else None)
        return res

    def translate(self, texts: Sequence[str], src: str, tgt: str, keys: Sequence[Any] | None = None
                  ) -> list[str | None]:
        outs = self._ask([render_prompt("translation", source_language=language_name(src),
                                        target_language=language_name(tgt), text=t) for t in texts],
                         f"translate {src}->{tgt}")
        return [parse_generated_line(o, "Translation") for o in outs]


class OfflineSteps:
    """The same steps answered from ground truth a source attached to ``StepInput.hints``.

    Hints: ``complex_queries`` (list), ``long_answer`` (str), ``out_of_scope``
    (list of (q, a)), ``translations`` ({lang: {key: text}}). Judge and score
    accept every hinted sample (ground truth is faithful by construction).
    """

    offline = True

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)

    def complex_query(self, items: Sequence[StepInput]) -> list[str | None]:
        out = []
        for it in items:
            qs = list(it.hints.get("complex_queries") or [])
            out.append(self.rng.choice(qs) if qs else None)
        return out

    def long_answer(self, items: Sequence[StepInput]) -> list[str | None]:
        return [it.hints.get("long_answer") for it in items]

    def out_of_scope(self, items: Sequence[StepInput]) -> list[tuple[str, str] | None]:
        out = []
        for it in items:
            cands = list(it.hints.get("out_of_scope") or [])
            out.append(tuple(self.rng.choice(cands)) if cands else None)
        return out

    def judge(self, items: Sequence[StepInput]) -> list[bool | None]:
        return [True for _ in items]

    def score(self, items: Sequence[StepInput]) -> list[float | None]:
        return [10.0 for _ in items]

    def translate(self, texts: Sequence[str], src: str, tgt: str, keys: Sequence[Any] | None = None
                  ) -> list[str | None]:
        # offline translation is a lookup in the parallel ground truth; unknown text -> None
        table = {}
        for k in keys or []:
            if isinstance(k, dict):
                table.update(k)
        return [table.get(t) for t in texts]


def make_steps(cfg: LLMConfig, *, seed: int = 0, client: Any = None):
    """:class:`OfflineSteps` or :class:`LLMSteps` for ``cfg.backend``."""
    if cfg.backend == "offline":
        return OfflineSteps(seed)
    return LLMSteps(LLMClient(cfg, client=client))
