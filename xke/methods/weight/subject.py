"""Where the subject is in a rendered prompt.

The position is found in character space and mapped to tokens with the fast tokenizer's offset
mapping, so it works whatever the script (a Chinese subject inside a Chinese prompt, a Latin-script
name inside a Chinese sentence) and whatever the tokenizer merges. A subject that does not occur in
the prompt is a :class:`~xke.errors.DataError` naming the case, the subject and the prompt: editing
the wrong token silently is a known failure of earlier cross-lingual editing code.
"""

from __future__ import annotations

import unicodedata

from ...errors import DataError, ModelError


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
    from ...models.prompts import _special_prefix, _starts_with_bos

    start, end = find_subject_span(text, subject, case_id=case_id, lang=lang)
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
