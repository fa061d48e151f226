"""Where the subject is in a rendered prompt.

The position is found in character space and mapped to tokens with the fast tokenizer's offset
mapping, so it works whatever the script (a Chinese subject inside a Chinese prompt, a Latin-script
name inside a Chinese sentence) and whatever the tokenizer merges. What happens when a subject does not occur in its prompt (a translated subject missing from the
translated prompt: 28% of MzsRE's German records, 82% of Thai) is a policy, the locate-and-edit
methods' ``subject_not_found`` option (:data:`SUBJECT_POLICIES`):

- ``skip`` (default): ``xke eval`` leaves such cases out before editing and reports how many
  (``metrics.json`` ``skipped.subject_not_found``); editing one directly raises as ``fail`` does;
- ``last``: edit at the prompt's last token instead (a warning counts them);
- ``fail``: a :class:`~xke.errors.DataError` naming the case, the subject and the prompt. Editing the
  wrong token silently is a known failure of earlier cross-lingual editing code, so the fallback is
  never silent.
"""

from __future__ import annotations

import contextlib
import contextvars
import unicodedata
import warnings

from ...errors import DataError, ModelError

#: what to do with an edit whose subject does not occur in its prompt
SUBJECT_POLICIES = ("skip", "last", "fail")
_POLICY: contextvars.ContextVar[str] = contextvars.ContextVar("xke_subject_not_found", default="fail")


@contextlib.contextmanager
def subject_not_found_policy(policy: str):
    """Within the block, :func:`subject_last_token` follows ``policy`` for a subject missing from its prompt
    (``last``: the prompt's last token; otherwise the :class:`DataError`)."""
    if policy not in SUBJECT_POLICIES:
        raise ValueError(f"subject_not_found must be one of {', '.join(SUBJECT_POLICIES)}, got {policy!r}")
    token = _POLICY.set(policy)
    try:
        yield
    finally:
        _POLICY.reset(token)


def subject_in_text(text: str, subject: str) -> bool:
    """Whether :func:`find_subject_span` finds ``subject`` in ``text``."""
    try:
        find_subject_span(text, subject)
    except DataError:
        return False
    return True


def requests_without_subject(formatter, requests, prefixes: dict) -> list[int]:
    """Indices of ``requests`` whose subject is missing from one of their rendered rewrite prompts (the
    prompt behind each context prefix, as the locate-and-edit methods render it)."""
    from .targets import prefixes_for

    return [i for i, r in enumerate(requests)
            if any(not subject_in_text(formatter.format(pre + r.prompt, r.style), r.subject)
                   for pre in prefixes_for(prefixes, r.lang))]


def find_subject_span(text: str, subject: str, *, case_id: str | None = None, lang: str | None = None,
                      occurrence: str = "last") -> tuple[int, int]:
    """Character span ``[start, end)`` of ``subject`` in ``text`` (its last occurrence by default).

    Tries an exact match, then a case-insensitive one, then both NFKC-normalised (full-width
    forms). Raises :class:`DataError` when the subject is not there.
    """
    if not subject or not subject.strip():
        raise DataError(f"empty subject for case {case_id!r}" + (f" ({lang})" if lang else ""))
    for hay, needle in ((text, subject), (text.casefold(), subject.casefold())):
        if len(hay) != len(text):  # casefold changed lengths (ß -> ss): offsets would be wrong
            continue
        i = hay.rfind(needle) if occurrence == "last" else hay.find(needle)
        if i >= 0:
            return i, i + len(needle)
    norm_t, norm_s = unicodedata.normalize("NFKC", text), unicodedata.normalize("NFKC", subject)
    if len(norm_t) == len(text):
        i = norm_t.rfind(norm_s) if occurrence == "last" else norm_t.find(norm_s)
        if i >= 0:
            return i, i + len(norm_s)
    where = f"case {case_id!r}" if case_id is not None else "request"
    if lang:
        where += f" ({lang})"
    raise DataError(f"{where}: subject {subject!r} does not occur in the prompt {text!r}. Locate-and-edit "
                    "methods edit the representation of the subject's last token, so the subject must be "
                    "written in the prompt exactly (same language and script).")


def tokenize_with_offsets(tokenizer, text: str, add_special_tokens: bool) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character offsets of ``text``."""
    try:
        enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError) as e:
        raise ModelError("subject positions need a fast tokenizer (offset mapping); "
                         f"{type(tokenizer).__name__} has none: {e}") from e
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def subject_last_token(tokenizer, text: str, subject: str, ids: list[int] | None = None, *,
                       case_id: str | None = None, lang: str | None = None) -> int:
    """Index (into the token ids of ``text``) of the last token overlapping the subject's last occurrence.

    ``ids`` are the ids the caller feeds the model for ``text`` (from
    :func:`xke.models.prompts.encode_prompt`); they are checked against the offset tokenization.
    """
    from ...models.prompts import _special_prefix, _starts_with_bos, encode_prompt

    try:
        start, end = find_subject_span(text, subject, case_id=case_id, lang=lang)
    except DataError:
        if _POLICY.get() != "last" or not (subject or "").strip():
            raise
        warnings.warn(f"case {case_id!r} ({lang}): subject {subject!r} is not in the prompt; editing at the "
                      "prompt's last token (subject_not_found: last)", stacklevel=2)
        return (len(ids) if ids is not None else len(encode_prompt(tokenizer, text))) - 1
    prefix = [] if _starts_with_bos(tokenizer, text) else _special_prefix(tokenizer)
    tok_ids, offsets = tokenize_with_offsets(tokenizer, text, False)
    tok_ids, offsets = prefix + tok_ids, [(0, 0)] * len(prefix) + offsets
    if ids is not None and len(ids) < len(tok_ids) and list(ids) == tok_ids[:len(ids)]:
        tok_ids, offsets = tok_ids[:len(ids)], offsets[:len(ids)]  # trailing whitespace went with the answer
    if ids is not None and list(ids) != tok_ids:
        raise ModelError("tokenization with offsets differs from the prompt's ids; cannot locate the subject")
    last = None
    for i, (s, e) in enumerate(offsets):
        if e > s and s < end and e > start:
            last = i
    if last is None:
        raise DataError(f"case {case_id!r}: subject {subject!r} maps to no token in {text!r}")
    return last
