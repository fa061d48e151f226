"""Language codes, aliases, names and how answers attach to prompts.

xke uses the codes the benchmarks spell (MzsRE's ``cz`` for Czech and ``du``
for Dutch); ISO codes are accepted as aliases.
"""

from __future__ import annotations

from ..errors import XkeError

#: code -> English name (used in the X-KDE prompt "... respond ... in {Language}")
LANGUAGE_NAMES: dict[str, str] = {
    "en": "English", "zh": "Chinese", "cz": "Czech", "de": "German", "du": "Dutch",
    "es": "Spanish", "fr": "French", "pt": "Portuguese", "ru": "Russian", "th": "Thai",
    "tr": "Turkish", "vi": "Vietnamese", "ja": "Japanese", "ko": "Korean", "it": "Italian",
    "ar": "Arabic", "pl": "Polish", "sv": "Swedish", "fi": "Finnish", "uk": "Ukrainian",
}

#: ISO 639-1 and other spellings -> xke code
LANGUAGE_ALIASES: dict[str, str] = {"cs": "cz", "nl": "du", "zh-cn": "zh", "zh_cn": "zh",
                                     "chinese": "zh", "english": "en"}

#: languages written without spaces between words: an answer follows the prompt directly
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "ko_nospace"})

MZSRE_LANGUAGES = ("en", "cz", "de", "du", "es", "fr", "pt", "ru", "th", "tr", "vi", "zh")


def normalize_lang(code: str, *, allowed: tuple[str, ...] | frozenset[str] | None = None) -> str:
    """Return xke's code for ``code`` (case-insensitive, ISO aliases accepted).

    Raises :class:`XkeError` for an unknown code, listing the known ones.
    """
    if not isinstance(code, str) or not code.strip():
        raise XkeError(f"empty language code: {code!r}")
    c = code.strip().lower()
    c = LANGUAGE_ALIASES.get(c, c)
    known = tuple(allowed) if allowed is not None else tuple(LANGUAGE_NAMES)
    if c not in known:
        raise XkeError(f"unknown language {code!r}; known: {', '.join(sorted(known))}"
                       + (" (ISO aliases cs->cz, nl->du accepted)" if allowed is None or "cz" in known else ""))
    return c


def parse_langs(spec: str | list[str], **kw) -> list[str]:
    """Parse ``"en,zh,de"`` (or a list) into normalized codes, keeping order, no duplicates."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for it in items:
        if it.strip():
            c = normalize_lang(it, **kw)
            if c not in out:
                out.append(c)
    if not out:
        raise XkeError(f"no language given in {spec!r}")
    return out


def language_name(code: str) -> str:
    """English name of a language code (``zh`` -> ``Chinese``)."""
    return LANGUAGE_NAMES[normalize_lang(code)]


def uses_spaces(code: str) -> bool:
    """Whether words (and so a prompt and its answer) are separated by spaces in this language."""
    return normalize_lang(code) not in NO_SPACE_LANGUAGES
