"""Generation engines for the server, and the batcher that groups concurrent requests.

An engine (:class:`GenerationBackend`) answers a list of rendered prompts
greedily: ``generate(prompts, max_new_tokens, on_text)`` returns one
:class:`Completion` per prompt; ``on_text(i, text_so_far)`` streams partial
answers where the engine can.

- :class:`TransformersBackend` (default): the model in this process (CPU or
  GPU) through :class:`xke.eval.engine.Engine` -- the same batched greedy
  decoding and stop rules (EOS, end of turn, newline after the answer) as
  ``xke eval``, streaming token by token.
- :class:`VLLMBackend` (``--engine vllm``): vLLM's offline engine. Edits live
  in the prompt, so vLLM serves them unchanged; several replicas can share
  one memory.

:class:`Batcher` runs the engine on one worker thread: requests that arrive
within ``window`` seconds of each other (up to ``max_batch``) are answered in
one batch.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

from ..errors import ConfigError
from ..models.prompts import encode_prompt

TextCallback = Callable[[int, str], None]


@dataclass
class Completion:
    """One answer: text (stripped), token counts, and why it stopped (``stop`` or ``length``)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class GenerationBackend(Protocol):
    """Greedy generation over rendered prompt strings."""

    name: str

    def generate(self, prompts: Sequence[str], max_new_tokens: int,
                 on_text: TextCallback | None = None) -> list[Completion]:
        """One :class:`Completion` per prompt; ``on_text(i, text so far)`` as tokens arrive."""


def _decode(tokenizer, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False).strip()


class TransformersBackend:
    """In-process transformers model through :class:`xke.eval.engine.Engine`."""

    name = "transformers"

    def __init__(self, model, tokenizer, *, token_budget: int = 16384, max_rows: int = 64):
        from ..eval.engine import Engine

        self.tokenizer = tokenizer
        self.engine = Engine(model, tokenizer, token_budget=token_budget, max_rows=max_rows)

    def generate(self, prompts, max_new_tokens, on_text=None):
        ids = [encode_prompt(self.tokenizer, p) for p in prompts]
        raw: list[list[int]] = [[] for _ in prompts]

        def on_token(i: int, t: int) -> None:
            raw[i].append(t)
            if on_text is not None:
                on_text(i, _decode(self.tokenizer, raw[i]))

        gens = self.engine.generate(ids, max_new_tokens, on_token=on_token)
        return [Completion(text=g.text, prompt_tokens=len(ids[i]), completion_tokens=len(raw[i]),
                           finish_reason="length" if len(raw[i]) >= max_new_tokens else "stop")
                for i, g in enumerate(gens)]


class VLLMBackend:
    """vLLM's offline engine on a local model directory (greedy; the answer ends at its first newline,
    as with the transformers engine). Streaming sends the answer in one piece."""

    name = "vllm"

    def __init__(self, model_path: str | Path, *, dtype: str = "auto", **engine_kw):
        try:
            import vllm
        except ImportError as e:
            raise ConfigError(f"--engine vllm needs vLLM, which is not importable here ({e}); install it on a "
                              "CUDA machine (pip install 'xke[vllm]') or use --engine transformers") from None
        self._vllm = vllm
        self.llm = vllm.LLM(model=str(model_path), dtype=dtype, trust_remote_code=False, **engine_kw)
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts, max_new_tokens, on_text=None):
        ids = [encode_prompt(self.tokenizer, p) for p in prompts]
        params = self._vllm.SamplingParams(temperature=0.0, max_tokens=int(max_new_tokens), skip_special_tokens=True)
        outs = self.llm.generate([{"prompt_token_ids": x} for x in ids], params, use_tqdm=False)
        result = []
        for i, o in enumerate(outs):
            c = o.outputs[0]
            text = c.text.strip().split("\n")[0].strip()
            if on_text is not None:
                on_text(i, text)
            result.append(Completion(text=text, prompt_tokens=len(ids[i]), completion_tokens=len(c.token_ids),
                                     finish_reason="length" if c.finish_reason == "length" else "stop"))
        return result


ENGINES = ("transformers", "vllm")


def make_backend(engine: str, *, model_spec: str, device: str = "auto", dtype: str = "auto",
                 trust_remote_code: bool = False):
    """The engine ``engine`` on model ``model_spec``; returns ``(backend, model, tokenizer)`` (the model is
    None for vLLM, which holds its own)."""
    from ..models.loading import load_model
    from ..world.provider import model_path

    if engine == "transformers":
        lm = load_model(str(model_path(model_spec)), dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        return TransformersBackend(lm.model, lm.tokenizer), lm.model, lm.tokenizer
    if engine == "vllm":
        backend = VLLMBackend(model_path(model_spec), dtype=dtype)
        return backend, None, backend.tokenizer
    raise ConfigError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")


@dataclass
class _Job:
    prompt: str
    max_new: int
    future: concurrent.futures.Future
    on_text: Callable[[str], None] | None


class Batcher:
    """Answers prompts on one worker thread, batching the requests that arrive together.

    :meth:`submit` returns a :class:`concurrent.futures.Future` of a :class:`Completion`. The worker takes
    the first waiting request, collects others for up to ``window`` seconds (at most ``max_batch``), and
    runs them as batches of equal ``max_new_tokens``.
    """

    def __init__(self, backend: GenerationBackend, *, max_batch: int = 16, window: float = 0.01):
        if max_batch < 1:
            raise ConfigError(f"max_batch must be ≥ 1, got {max_batch}")
        self.backend = backend
        self.max_batch = int(max_batch)
        self.window = float(window)
        self._q: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "batches": 0, "largest_batch": 0}

    def submit(self, prompt: str, max_new_tokens: int, on_text: Callable[[str], None] | None = None
               ) -> concurrent.futures.Future:
        """Queue one prompt; ``on_text(text so far)`` is called from the worker as the answer grows."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="xke-serve-batcher", daemon=True)
                self._thread.start()
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._q.put(_Job(prompt, int(max_new_tokens), fut, on_text))
        return fut

    def _collect(self, first: _Job) -> list[_Job]:
        jobs = [first]
        deadline = time.monotonic() + self.window
        while len(jobs) < self.max_batch:
            try:
                job = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._q.put(None)
                break
            jobs.append(job)
        return jobs

    def _loop(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            jobs = [j for j in self._collect(first) if j.future.set_running_or_notify_cancel()]
            groups: dict[int, list[_Job]] = {}
            for j in jobs:
                groups.setdefault(j.max_new, []).append(j)
            for max_new, group in groups.items():
                self.stats["requests"] += len(group)
                self.stats["batches"] += 1
                self.stats["largest_batch"] = max(self.stats["largest_batch"], len(group))

                def on_text(i: int, text: str, group=group) -> None:
                    cb = group[i].on_text
                    if cb is not None:
                        try:
                            cb(text)
                        except Exception:  # a listener gone (client left, loop closed) must not fail the batch
                            group[i].on_text = None

                try:
                    results = self.backend.generate([j.prompt for j in group], max_new, on_text=on_text)
                except BaseException as e:  # hand the failure to every waiting request
                    for j in group:
                        j.future.set_exception(e)
                    continue
                for j, r in zip(group, results):
                    j.future.set_result(r)

    def close(self) -> None:
        """Stop the worker after the requests already queued."""
        with self._lock:
            if self._thread is not None:
                self._q.put(None)
                self._thread.join(timeout=60)
                self._thread = None
