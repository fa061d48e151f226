"""What one chat request does: retrieve edits, build the X-KDE prompt, generate.

:class:`ChatService` holds an in-context method (X-KDE inference in
``retrieve`` mode, :mod:`xke.methods.xkde`) over the server's edit memory:
:meth:`ContextMethod.retrieve` finds the stored edits scoring at least the
threshold (top-k, any language), :meth:`ContextMethod.prompt_for` writes the
X-KDE prompt with them through the model's chat template, and the
:class:`~xke.serve.generation.Batcher` answers it together with the other
requests in flight.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..data.languages import LANGUAGE_NAMES
from ..data.schema import Query
from ..memory.retrievers import Hit
from ..methods.context import ContextMethod
from .generation import Batcher
from .memory import EditMemory

#: script -> language code, for guessing a question's language when the request does not say
SCRIPT_LANG = {"kana": "ja", "hangul": "ko", "thai": "th", "cyrillic": "ru", "arabic": "ar", "han": "zh"}


def guess_language(text: str, default: str = "en") -> str:
    """The language of ``text`` from its script: kana -> ja, hangul -> ko, else the most common of Han (zh),
    Thai, Cyrillic (ru), Arabic; Latin-script text (and anything else) -> ``default``."""
    from ..train.scorers import _char_script

    scripts = Counter(s for s in (_char_script(c) for c in text) if s is not None)
    for s in ("kana", "hangul"):
        if scripts.get(s):
            return SCRIPT_LANG[s]
    ranked = [s for s, _ in scripts.most_common() if s in SCRIPT_LANG and SCRIPT_LANG[s] in LANGUAGE_NAMES]
    return SCRIPT_LANG[ranked[0]] if ranked else default


@dataclass
class Prepared:
    """A request ready for the engine: the full prompt and the edits put in it."""

    prompt: str
    hits: list[Hit]
    language: str


class ChatService:
    """Retrieval + X-KDE prompt + batched generation over one model and one memory."""

    def __init__(self, method: ContextMethod, memory: EditMemory, batcher: Batcher, *, model_id: str,
                 default_language: str = "en", max_tokens: int = 64, max_tokens_limit: int = 512):
        self.method, self.memory, self.batcher = method, memory, batcher
        self.model_id = model_id
        self.default_language = default_language
        self.max_tokens = int(max_tokens)
        self.max_tokens_limit = int(max_tokens_limit)
        self._lock = threading.Lock()   # the retriever's index and cache are not thread-safe

    def prepare(self, text: str, language: str | None = None, use_memory: bool = True) -> Prepared:
        """Retrieve the edits for ``text`` (unless ``use_memory`` is false) and build the prompt."""
        lang = language or guess_language(text, self.default_language)
        hits: list[Hit] = []
        if use_memory:
            with self._lock:
                hits = list(self.method.retrieve(text))
        query = Query(case_id="", lang=lang, kind="chat", prompt=text, target="")
        return Prepared(self.method.prompt_for(query, [h.edit.to_request() for h in hits]), hits, lang)

    def info(self) -> dict[str, Any]:
        cfg = self.method.config
        return {"model": self.model_id, "engine": self.batcher.backend.name, "method": self.method.name,
                "retriever": cfg.retriever, "top_k": cfg.top_k, "threshold": self.method.score_threshold(),
                "memory": getattr(self.memory, "backend", type(self.memory).__name__),
                "edits_active": self.memory.count(), "generation": self.memory.generation(),
                "batches": dict(self.batcher.stats)}

    def close(self) -> None:
        self.batcher.close()
        self.method.close()
        self.memory.close()


def hit_to_json(h: Hit) -> dict[str, Any]:
    """An edit used for an answer, as the ``edits_used`` response field shows it."""
    e = h.edit
    return {"id": e.id, "score": round(float(h.score), 6), "language": e.lang, "prompt": e.prompt,
            "target": e.target_new}
