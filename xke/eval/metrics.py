"""Metric definitions of the papers (EasyEdit, Bi-ZsRE's evaluate script, the released X-KDE eval.py), as pure functions.

All per-example metrics return a fraction in [0, 1]; :func:`to_percent`
turns a fraction into the papers' percent with two decimals.

- :func:`teacher_forced_accuracy` — EasyEdit ``rewrite_acc`` / released X-KDE:
  mean of (argmax == target token) over the positions predicting the target.
- :func:`token_f1`, :func:`exact_match` — Bi-ZsRE's generation metrics.
- :func:`argmax_agreement` — locality under teacher forcing (post vs pre argmax).
  Locality on generations is ``token_f1(post_answer, pre_answer, tok)``.
- Portability is reliability computed on the portability question/answer.
- :func:`clm_scores` — CLM-Bench ``zh_score``, ``en_score``, ``trans``.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Callable, Iterable, Mapping, Sequence

Tokenize = Callable[[str], Sequence[Any]]


def _as_list(x: Any) -> list:
    """A plain list from a list, tuple, numpy array or torch tensor (1-D)."""
    if hasattr(x, "tolist"):
        x = x.tolist()
    if isinstance(x, (int, float)):
        return [x]
    return list(x)


def teacher_forced_accuracy(pred_ids: Sequence[int], target_ids: Sequence[int]) -> float:
    """Mean of ``pred_ids[i] == target_ids[i]`` over the target positions.

    ``pred_ids`` are the model's argmax predictions at the positions that
    predict each target token (the logits at position ``t-1`` for target token
    ``t``) under teacher forcing on ``prompt + target``. Partial credit per
    token. An empty target scores 0.0. Lengths must match.
    """
    p, t = _as_list(pred_ids), _as_list(target_ids)
    if len(p) != len(t):
        raise ValueError(f"teacher_forced_accuracy: {len(p)} predictions for {len(t)} target tokens")
    if not t:
        return 0.0
    return sum(int(a == b) for a, b in zip(p, t)) / len(t)


def argmax_agreement(pre_ids: Sequence[int], post_ids: Sequence[int]) -> float:
    """Locality under teacher forcing: fraction of positions where the post-edit argmax equals the
    pre-edit argmax (EasyEdit). Both sequences come from the same input (the locality prompt plus
    the pre-edit answer tokens). No positions -> 1.0 (nothing changed). Lengths must match."""
    a, b = _as_list(pre_ids), _as_list(post_ids)
    if len(a) != len(b):
        raise ValueError(f"argmax_agreement: {len(a)} pre-edit vs {len(b)} post-edit positions")
    if not a:
        return 1.0
    return sum(int(x == y) for x, y in zip(a, b)) / len(a)


def _tokens(text: str, tokenize: Tokenize | Any | None, strip: bool = True) -> list:
    if strip:
        text = text.strip()
    if not text:
        return []
    if tokenize is None:
        return text.split()
    if hasattr(tokenize, "encode") and hasattr(tokenize, "convert_ids_to_tokens"):  # a HF tokenizer
        return list(tokenize.encode(text, add_special_tokens=False))
    return list(tokenize(text))


def token_f1(pred: str, gold: str, tokenize: Tokenize | Any | None = None, *, strip: bool = True) -> float:
    """Token F1 of a generated answer against a reference (Bi-ZsRE).

    Both strings are stripped of surrounding whitespace (unless ``strip=False``,
    Bi-ZsRE's script on the decoded teacher-forced argmax), then tokenized with
    ``tokenize`` (a function ``str -> tokens``, or a Hugging Face tokenizer, whose
    ids are used without special tokens; default: whitespace split). F1 is the
    harmonic mean of multiset-overlap precision (overlap / pred tokens) and
    recall (overlap / gold tokens). Both empty -> 1.0; one empty -> 0.0;
    no overlap -> 0.0.
    """
    p, g = _tokens(pred, tokenize, strip), _tokens(gold, tokenize, strip)
    if not p and not g:
        return 1.0
    if not p or not g:
        return 0.0
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def exact_match(pred: str, gold: str, *, strip: bool = True) -> float:
    """1.0 if the strings are equal after removing leading and trailing whitespace, else 0.0.

    Only surrounding whitespace is normalised: case, punctuation, inner spacing
    and every other character (zero-width ones included) must match. ``strip=False``
    compares the strings as they are (Bi-ZsRE's ``a == b``).
    """
    if not strip:
        return float(pred == gold)
    return float(pred.strip() == gold.strip())


def mean(xs: Iterable[float | None]) -> float | None:
    """Arithmetic mean ignoring ``None`` (and NaN); ``None`` when nothing is left."""
    vals = [float(x) for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return sum(vals) / len(vals) if vals else None


def to_percent(x: float | None) -> float | None:
    """A fraction as the papers print it: ``round(100 * x, 2)`` (``None`` stays ``None``)."""
    return None if x is None else round(100.0 * float(x), 2)


def safe_div(a: float | None, b: float | None) -> float:
    """``a / b``, with 0.0 when ``b`` is 0 or either is missing."""
    if a is None or b is None or b == 0:
        return 0.0
    return a / b


def _metric(block: Mapping[str, Any] | None, name: str, key: str) -> float | None:
    if not block:
        return None
    v = block.get(name)
    if isinstance(v, Mapping):
        v = v.get(key)
    return None if v is None else float(v)


CLM_PARTS = ("reliability", "generality", "locality")


def clm_scores(by_lang: Mapping[str, Mapping[str, Any]], edit_lang: str, key: str = "tf_acc") -> dict[str, float | None]:
    """CLM-Bench summary scores.

    ``by_lang = {"zh": {"reliability": r, "generality": g, "locality": l}, "en": {...}}``;
    a value may also be a dict of metrics (``{"tf_acc": .., "f1": ..}``), read at ``key``.
    ``zh_score``/``en_score`` = mean of the three (missing ones ignored; ``None`` if the
    language is absent), in the scale of the inputs. ``trans`` is a ratio (×100 for
    percent): reliability in the language not edited ÷ reliability in the edited one
    (``edit_lang`` ``zh`` or ``en``); for ``edit_lang="mix"``, min/max of the two
    reliabilities. A zero denominator gives 0.0; ``trans`` is ``None`` when zh or en
    reliability is missing or ``edit_lang`` is another language.

    Table 1 of CLM-Bench (Llama3-8B, MEMIT): zh editing 19.55/63.21 -> 30.93%.
    """
    from ..data.languages import normalize_lang

    out: dict[str, float | None] = {}
    for lang in ("zh", "en"):
        block = by_lang.get(lang)
        out[f"{lang}_score"] = None if block is None else mean(_metric(block, k, key) for k in CLM_PARTS)
    rel = {lang: _metric(by_lang.get(lang), "reliability", key) for lang in ("zh", "en")}
    el = str(edit_lang).strip().lower()
    if el not in ("mix", "mixed", "both"):
        try:
            el = normalize_lang(el)
        except Exception:
            el = "?"
    trans: float | None = None
    if rel["zh"] is not None and rel["en"] is not None:
        if el in ("mix", "mixed", "both"):
            trans = safe_div(min(rel["zh"], rel["en"]), max(rel["zh"], rel["en"]))
        elif el in ("zh", "en"):
            other = "en" if el == "zh" else "zh"
            trans = safe_div(rel[other], rel[el])
    out["trans"] = trans
    return out
