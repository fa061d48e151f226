"""Benchmark loaders: Bi-ZsRE, MzsRE (test and training pairs), CLM-Bench and xke's JSONL.

Every loader returns :class:`LoadedCases` (a ``list`` of
:class:`~xke.data.schema.EditCase`, with ``skipped`` and ``warnings``
attached), validates what it reads and raises :class:`~xke.errors.DataError`
naming the file, the record and the field on any problem. Text is kept as the
files spell it (zero-width characters included); the only change is removing
the literal ``"nq question: "`` prefix of locality questions, as a prefix.

Entry points:

- :func:`load_bench` ``(bench, path, langs=None, limit=None)`` — dispatch by name
  (``bizsre``, ``mzsre``, ``clm``, ``knowedit``, ``jsonl``).
- :func:`load_bizsre`, :func:`load_mzsre`, :func:`load_clm`, :func:`load_knowedit`, :func:`read_jsonl`,
  :func:`write_jsonl`, :func:`case_from_dict`.
- :func:`load_mzsre_train` — MzsRE training TSVs as aligned (question, answer) pairs.
- :func:`check_bench` — the summary printed by ``xke data check``.

Strictness (so that ``data check`` passing means ``eval`` can read the file):
only regular files are read (a FIFO is refused, never opened); an empty file
or one with no records is an error; a string with a NUL character or a lone
surrogate is refused; a target made only of whitespace and zero-width
characters counts as empty; deeply nested JSON is a clear error; a Bi-ZsRE
record must have the same language sides as the others and an ``en`` side,
and an exact duplicate of an earlier record is refused; two MzsRE files for
one language (``cs.json`` and ``cz.json``) are refused.
"""

from __future__ import annotations

import json
import warnings as _warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import DataError, XkeError
from .languages import LANGUAGE_NAMES, MZSRE_LANGUAGES, normalize_lang, parse_langs
from .schema import EditCase, LangView, Provenance, cases_languages, is_blank, text_problem

NQ_PREFIX = "nq question: "

#: bench name -> canonical name
BENCH_ALIASES: dict[str, str] = {
    "bizsre": "bizsre", "bi-zsre": "bizsre", "bi_zsre": "bizsre", "zsre": "bizsre",
    "mzsre": "mzsre", "mzsre-test": "mzsre",
    "clm": "clm", "clm-bench": "clm", "clm_bench": "clm", "clmbench": "clm",
    "jsonl": "jsonl", "xke": "jsonl",
    "knowedit": "knowedit", "knowedit-zsre": "knowedit", "knowedit_zsre": "knowedit",
}
BENCHES = ("bizsre", "mzsre", "clm", "knowedit", "jsonl")

_ZSRE_FIELDS = ("subject", "src", "rephrase", "alt", "loc", "loc_ans", "portability")
_CLM_FIELDS = ("prompt", "target_new", "subject", "ground_truth", "rephrase_prompt", "loc", "loc_ans")
_VIEW_FIELDS = {"subject", "prompt", "target_new", "target_old", "paraphrases", "locality_prompt",
                "locality_answer", "portability_prompt", "portability_answer", "style", "locality_prefix",
                "extra_locality", "extra_portability"}


class LoadedCases(list):
    """A list of :class:`EditCase` plus what loading it reported.

    ``bench`` and ``path`` say what was read, ``skipped`` how many records were
    left out, ``warnings`` human-readable notes (also useful in a summary).
    """

    def __init__(self, cases: Iterable[EditCase] = (), *, bench: str = "", path: str = "",
                 skipped: int = 0, warnings: list[str] | None = None):
        super().__init__(cases)
        self.bench, self.path, self.skipped = bench, path, skipped
        self.warnings: list[str] = list(warnings or [])

    def summary(self) -> dict[str, Any]:
        """The ``xke data check --json`` object."""
        return {"bench": self.bench, "path": self.path, "cases": len(self),
                "languages": cases_languages(self), "skipped": self.skipped,
                "warnings": list(self.warnings)}


def strip_nq_prefix(text: str) -> str:
    """Remove the literal ``"nq question: "`` prefix (only as a prefix; nothing else changes)."""
    return text.removeprefix(NQ_PREFIX)


def nq_prefix_of(text: str | None) -> str:
    """The prefix :func:`strip_nq_prefix` removes from ``text`` (``""`` when none)."""
    return NQ_PREFIX if text and text.startswith(NQ_PREFIX) else ""


# --------------------------------------------------------------------------- helpers
def _check_regular(path: Path) -> None:
    from ..fsutil import is_regular_file

    if path.exists() and not path.is_dir() and not is_regular_file(path):
        raise DataError("not a regular file (a FIFO, socket or device is never read)", path=str(path))


def _json_loads(text: str, path: Path, row: int | None = None) -> Any:
    """``json.loads`` with one-line errors: bad JSON, NaN/Infinity, too deeply nested."""
    def bad_constant(name: str):
        raise DataError(f"{name} is not valid JSON", path=str(path), row=row)
    try:
        return json.loads(text, parse_constant=bad_constant)
    except json.JSONDecodeError as e:
        msg = (f"invalid JSON: {e.msg} (line {e.lineno}, column {e.colno})" if row is None
               else f"invalid JSON on line {row}: {e.msg} (column {e.colno})")
        raise DataError(msg, path=str(path), row=row) from None
    except RecursionError:
        raise DataError("invalid JSON: nested too deeply", path=str(path), row=row) from None


def read_text_file(path: Path) -> str:
    """A UTF-8 text file; a one-line :class:`DataError` naming the file when it is missing, not a regular
    file, or unreadable."""
    _check_regular(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError("file not found", path=str(path)) from None
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason} at byte {e.start})", path=str(path)) from None
    except OSError as e:
        raise DataError(f"cannot read: {e.strerror}", path=str(path)) from None


def _read_json(path: Path) -> Any:
    text = read_text_file(path)
    if not text.strip():
        raise DataError("empty file (no records)", path=str(path))
    return _json_loads(text, path)


def _records(data: Any, path: Path) -> list:
    if not isinstance(data, list):
        raise DataError(f"expected a JSON list of records, got {type(data).__name__}", path=str(path))
    return data


def _typename(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _get_str(rec: dict, key: str, *, path: Path, row: int, prefix: str = "", required: bool = True,
             nonempty: bool = False) -> str | None:
    fname = prefix + key
    if key not in rec:
        if required:
            raise DataError("missing field", path=str(path), row=row, field=fname)
        return None
    v = rec[key]
    if v is None and not required:
        return None
    if not isinstance(v, str):
        raise DataError(f"expected a string, got {_typename(v)} {v!r:.60}", path=str(path), row=row, field=fname)
    why = text_problem(v)
    if why:
        raise DataError(why, path=str(path), row=row, field=fname)
    if nonempty and is_blank(v):
        raise DataError("empty value (a new target must not be empty)" if "target" in key or key == "alt"
                        else "empty value", path=str(path), row=row, field=fname)
    return v


def _get_dict(rec: Any, path: Path, row: int, fname: str | None = None) -> dict:
    if not isinstance(rec, dict):
        raise DataError(f"expected a JSON object, got {_typename(rec)}", path=str(path), row=row, field=fname)
    return rec


def _lang_or_error(code: Any, path: Path, row: int | None, fname: str) -> str:
    if not isinstance(code, str):
        raise DataError(f"language key must be a string, got {_typename(code)}", path=str(path), row=row, field=fname)
    try:
        return normalize_lang(code)
    except XkeError:
        raise DataError(f"unknown language {code!r}; known: {', '.join(sorted(LANGUAGE_NAMES))} "
                        "(ISO aliases cs->cz, nl->du accepted)", path=str(path), row=row, field=fname) from None


def _want_langs(langs: str | Sequence[str] | None) -> list[str] | None:
    if langs is None:
        return None
    return parse_langs(langs)


def _zsre_view(rec: Any, path: Path, row: int, prefix: str = "") -> LangView:
    """One language side of a Bi-ZsRE / MzsRE record."""
    rec = _get_dict(rec, path, row, prefix.rstrip(".") or None)
    kw = dict(path=path, row=row, prefix=prefix)
    subject = _get_str(rec, "subject", **kw)
    src = _get_str(rec, "src", nonempty=True, **kw)
    alt = _get_str(rec, "alt", nonempty=True, **kw)
    rephrase = _get_str(rec, "rephrase", **kw)
    loc = _get_str(rec, "loc", **kw)
    loc_ans = _get_str(rec, "loc_ans", **kw)
    if "portability" not in rec:
        raise DataError("missing field", path=str(path), row=row, field=prefix + "portability")
    port = rec["portability"]
    if not isinstance(port, dict):
        raise DataError(f"expected an object with 'New Question' and 'New Answer', got {_typename(port)}",
                        path=str(path), row=row, field=prefix + "portability")
    pq = _get_str(port, "New Question", path=path, row=row, prefix=prefix + "portability.")
    pa = _get_str(port, "New Answer", path=path, row=row, prefix=prefix + "portability.")
    return LangView(subject=subject, prompt=src, target_new=alt, target_old=None,
                    paraphrases=[rephrase] if rephrase else [],
                    locality_prompt=strip_nq_prefix(loc) if loc else None,
                    locality_answer=loc_ans, locality_prefix=nq_prefix_of(loc),
                    portability_prompt=pq or None, portability_answer=pa or None, style="question")


def _limit(cases: list, limit: int | None) -> list:
    if limit is not None:
        if limit < 0:
            raise XkeError(f"limit must be >= 0, got {limit}")
        return cases[:limit]
    return cases


# --------------------------------------------------------------------------- Bi-ZsRE
def load_bizsre(path: str | Path, langs: str | Sequence[str] | None = None,
                limit: int | None = None) -> LoadedCases:
    """Bi-ZsRE ``test.json``: records ``{"en": {...}, "zh": {...}}`` -> cases ``bizsre-<row>``.

    ``path`` is the file or a folder holding ``test.json``. ``langs`` keeps only
    those views (each must exist in every record).
    """
    p = Path(path)
    if p.is_dir():
        p = p / "test.json"
    recs = _records(_read_json(p), p)
    want = _want_langs(langs)
    cases = []
    sides: list[str] | None = None
    seen: dict[str, int] = {}
    for row, rec in enumerate(recs):
        rec = _get_dict(rec, p, row)
        if not rec:
            raise DataError("record has no language sides", path=str(p), row=row)
        key = json.dumps(rec, sort_keys=True, ensure_ascii=False)
        if key in seen:
            raise DataError(f"duplicate of record {seen[key]} (the same edit twice)", path=str(p), row=row)
        seen[key] = row
        have = sorted(_lang_or_error(k, p, row, k) for k in rec)
        if want is None:
            if "en" not in have:
                raise DataError(f"no 'en' side in this record (it has {sorted(rec)}); Bi-ZsRE records have en "
                                "and zh", path=str(p), row=row, field="en")
            if sides is None:
                sides = have
            elif have != sides:
                missing = sorted(set(sides) - set(have))
                raise DataError(f"this record has sides {have}, record 0 has {sides}"
                                + (f" (no {missing})" if missing else ""), path=str(p), row=row,
                                field=missing[0] if missing else None)
        views: dict[str, LangView] = {}
        for key, side in rec.items():
            lang = _lang_or_error(key, p, row, key)
            if want is not None and lang not in want:
                continue
            views[lang] = _zsre_view(side, p, row, prefix=f"{key}.")
        if want is not None:
            for lang in want:
                if lang not in views:
                    raise DataError(f"no '{lang}' side in this record (it has {sorted(rec)})",
                                    path=str(p), row=row, field=lang)
        cases.append(EditCase(f"bizsre-{row}", views, Provenance(str(p), row)))
    return LoadedCases(_limit(cases, limit), bench="bizsre", path=str(p))


# --------------------------------------------------------------------------- MzsRE test
def _mzsre_files(path: Path, suffix: str, want: list[str] | None) -> tuple[dict[str, Path], list[str]]:
    """language -> file for a MzsRE folder (or one file), plus warnings."""
    warns: list[str] = []
    if path.is_file():
        lang = _lang_or_error(path.stem, path, None, "file name (language code)")
        if want is not None and lang not in want:
            raise DataError(f"file is language '{lang}', not one of {want}", path=str(path))
        return {lang: path}, warns
    if not path.is_dir():
        raise DataError("no such file or folder", path=str(path))
    sub = "test" if suffix == ".json" else "train"
    if not any(path.glob(f"*{suffix}")) and (path / sub).is_dir():
        path = path / sub
    files: dict[str, Path] = {}
    for f in sorted(path.glob(f"*{suffix}")):
        try:
            lang = normalize_lang(f.stem)
        except XkeError:
            warns.append(f"ignored {f.name}: not a language code")
            continue
        if lang in files:
            raise DataError(f"both {files[lang].name} and {f.name} are language '{lang}'; keep one of them",
                            path=str(path))
        files[lang] = f
    if not files:
        raise DataError(f"no <lang>{suffix} files in this folder", path=str(path))
    if want is not None:
        missing = [l for l in want if l not in files]
        if missing:
            raise DataError(f"no file for language(s) {missing}; found {sorted(files)}", path=str(path))
        files = {l: files[l] for l in want}
    else:
        order = {l: i for i, l in enumerate(MZSRE_LANGUAGES)}
        files = dict(sorted(files.items(), key=lambda kv: (order.get(kv[0], 99), kv[0])))
    return files, warns


def load_mzsre(path: str | Path, langs: str | Sequence[str] | None = None,
               limit: int | None = None) -> LoadedCases:
    """MzsRE test set: a folder of ``<lang>.json`` (row-aligned across languages) or one file.

    Row ``i`` of every language file becomes the case ``mzsre-<i>``. ``langs``
    (ISO aliases ``cs``/``nl`` accepted) selects files; all must have the same
    number of records.
    """
    p = Path(path)
    want = _want_langs(langs)
    files, warns = _mzsre_files(p, ".json", want)
    per_lang: dict[str, list] = {lang: _records(_read_json(f), f) for lang, f in files.items()}
    counts = {lang: len(r) for lang, r in per_lang.items()}
    if len(set(counts.values())) > 1:
        raise DataError(f"language files are not row-aligned: record counts differ {counts}", path=str(p))
    n = next(iter(counts.values()))
    cases = []
    first_file = next(iter(files.values()))
    for row in range(n if limit is None else min(n, max(limit, 0))):
        views = {lang: _zsre_view(per_lang[lang][row], files[lang], row) for lang in files}
        cases.append(EditCase(f"mzsre-{row}", views, Provenance(str(first_file if p.is_file() else p), row)))
    return LoadedCases(cases, bench="mzsre", path=str(p), warnings=warns)


# --------------------------------------------------------------------------- MzsRE train
@dataclass
class TrainPairs:
    """MzsRE training pairs, line-aligned across languages.

    ``pairs[lang][k]`` is ``(question, answer)``; ``lines[k]`` is its 1-based
    line number in every file. ``skipped_lines`` are the broken lines (no tab,
    or an empty answer, in any language), dropped in all languages.
    """

    path: str
    pairs: dict[str, list[tuple[str, str]]]
    lines: list[int]
    skipped_lines: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: per language, the 1-based numbers of its own broken lines
    broken: dict[str, list[int]] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        return len(self.skipped_lines)

    @property
    def languages(self) -> list[str]:
        return list(self.pairs)

    def __len__(self) -> int:
        return len(self.lines)

    def summary(self) -> dict[str, Any]:
        return {"bench": "mzsre-train", "path": self.path, "cases": len(self),
                "languages": {l: len(v) for l, v in self.pairs.items()},
                "skipped": self.skipped, "warnings": list(self.warnings)}


def _read_lines(path: Path) -> list[str]:
    _check_regular(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError("file not found", path=str(path)) from None
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason} at byte {e.start})", path=str(path)) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [l[:-1] if l.endswith("\r") else l for l in lines]


def _parse_tsv_line(line: str) -> tuple[str, str] | None:
    """``(question, answer)`` or None for a broken line (no tab, or an empty answer/question)."""
    if "\t" not in line:
        return None
    q, a = line.split("\t", 1)
    q, a = q.rstrip(" "), a.strip()
    if not q.strip() or not a:
        return None
    return q, a


def load_mzsre_train(path: str | Path, langs: str | Sequence[str] | None = None) -> TrainPairs:
    """MzsRE training TSVs (``question<TAB>answer``), line-aligned across languages.

    ``path`` is the ``train`` folder (or ``mzsre/`` holding it) or one ``<lang>.tsv``.
    Broken lines — no tab (a naive split would return the question as the
    answer), or an empty answer — are never parsed: they are skipped in every
    language, counted and reported by 1-based line number, with a warning.
    The trailing space some languages leave before the tab is removed.
    """
    p = Path(path)
    files, warns = _mzsre_files(p, ".tsv", _want_langs(langs))
    raw = {lang: _read_lines(f) for lang, f in files.items()}
    counts = {lang: len(v) for lang, v in raw.items()}
    if len(set(counts.values())) > 1:
        raise DataError(f"training files are not line-aligned: line counts differ {counts}", path=str(p))
    n = next(iter(counts.values()))
    parsed = {lang: [_parse_tsv_line(l) for l in lines] for lang, lines in raw.items()}
    pairs: dict[str, list[tuple[str, str]]] = {lang: [] for lang in files}
    kept, skipped = [], []
    for i in range(n):
        if any(parsed[lang][i] is None for lang in files):
            skipped.append(i + 1)
            continue
        kept.append(i + 1)
        for lang in files:
            pairs[lang].append(parsed[lang][i])
    if skipped:
        shown = ", ".join(map(str, skipped[:50])) + (" ..." if len(skipped) > 50 else "")
        msg = (f"skipped {len(skipped)} broken line(s) (no tab or empty answer in at least one language), "
               f"1-based line numbers: {shown}")
        warns.append(msg)
        _warnings.warn(f"{p}: {msg}", stacklevel=2)
    broken = {lang: [i + 1 for i, x in enumerate(parsed[lang]) if x is None] for lang in files}
    return TrainPairs(path=str(p), pairs=pairs, lines=kept, skipped_lines=skipped, warnings=warns, broken=broken)


# --------------------------------------------------------------------------- CLM-Bench
def _has_cjk(s: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" for ch in s)


def _clm_kind(path: Path, recs: list) -> str:
    """``zh``, ``en`` or ``merged`` for a CLM-Bench file (by keys, then name, then content)."""
    first = recs[0] if recs and isinstance(recs[0], dict) else {}
    if any(k.startswith("english_") for k in first):
        return "en"
    name = path.name.lower()
    if "merged" in name or "alternat" in name:
        return "merged"
    if "chinese" in name or name.startswith("zh"):
        return "zh"
    if len(recs) >= 2 and isinstance(recs[1], dict):
        p0, p1 = str(first.get("prompt", "")), str(recs[1].get("prompt", ""))
        if _has_cjk(p0) and not _has_cjk(p1):
            return "merged"
    return "zh"


def _clm_view(rec: Any, path: Path, row: int, prefix: str) -> tuple[LangView, Any]:
    rec = _get_dict(rec, path, row)
    kw = dict(path=path, row=row)
    g = lambda k, **more: _get_str(rec, (prefix + k) if k not in ("loc", "loc_ans") else k, **kw, **more)  # noqa: E731
    prompt = g("prompt", nonempty=True)
    target = g("target_new", nonempty=True)
    subject = g("subject")
    old = g("ground_truth", required=False)
    reph = g("rephrase_prompt", required=False)
    loc = g("loc", required=False)
    loc_ans = g("loc_ans", required=False)
    cid = rec.get("case_id")
    if cid is not None and not isinstance(cid, (int, str)):
        raise DataError(f"expected an int or string, got {_typename(cid)}", path=str(path), row=row, field="case_id")
    view = LangView(subject=subject, prompt=prompt, target_new=target, target_old=old or None,
                    paraphrases=[reph] if reph else [],
                    locality_prompt=strip_nq_prefix(loc) if loc else None, locality_answer=loc_ans,
                    locality_prefix=nq_prefix_of(loc), style="cloze")
    return view, cid


def _clm_dir_files(p: Path) -> tuple[Path | None, Path | None, Path | None]:
    zh = en = merged = None
    for f in sorted(p.glob("*.json")):
        n = f.name.lower()
        if "merged" in n or "alternat" in n:
            merged = merged or f
        elif "english" in n:
            en = en or f
        elif "chinese" in n:
            zh = zh or f
    return zh, en, merged


def load_clm(path: str | Path, langs: str | Sequence[str] | None = None,
             limit: int | None = None) -> LoadedCases:
    """CLM-Bench: the Chinese file, the English file, both (a folder), or the merged file.

    Chinese and English rows are paired by POSITION (``case_id`` is not unique
    in the full files); the merged file alternates zh, en: rows ``2i`` and
    ``2i+1`` form case ``clm-<i>``. Prompts are cloze statements
    (``style="cloze"``), ``target_old`` is ``ground_truth``, the paraphrase is
    ``rephrase_prompt``. A folder holding the Chinese and English files uses
    them (a merged file beside them is ignored with a warning); a folder with
    only the merged file uses it.
    """
    p = Path(path)
    want = _want_langs(langs)
    warns: list[str] = []
    if p.is_dir():
        zh_f, en_f, merged_f = _clm_dir_files(p)
        if zh_f or en_f:
            if merged_f:
                warns.append(f"ignored {merged_f.name}: the Chinese/English files are used")
            sources = {"zh": zh_f, "en": en_f}
            sources = {k: v for k, v in sources.items() if v is not None and (want is None or k in want)}
            if not zh_f or not en_f:
                warns.append(f"only the {'Chinese' if zh_f else 'English'} file was found in the folder")
        elif merged_f:
            return _load_clm_merged(merged_f, want, limit, warns)
        else:
            raise DataError("no CLM-Bench files (chinese_*.json, english_*.json or merged_*.json) in this folder",
                            path=str(p))
    else:
        recs = _records(_read_json(p), p)
        kind = _clm_kind(p, recs)
        if kind == "merged":
            return _load_clm_merged(p, want, limit, warns, recs)
        sources = {kind: p} if want is None or kind in want else {}
    if want is not None:
        missing = [l for l in want if l not in sources]
        if missing:
            raise DataError(f"no CLM-Bench file for language(s) {missing} here (CLM-Bench has zh and en)",
                            path=str(p))
    if not sources:
        raise DataError("nothing to load", path=str(p))
    per_lang = {}
    for lang, f in sources.items():
        recs = _records(_read_json(f), f)
        per_lang[lang] = [_clm_view(r, f, i, "english_" if lang == "en" else "") for i, r in enumerate(recs)]
    counts = {lang: len(v) for lang, v in per_lang.items()}
    if len(set(counts.values())) > 1:
        raise DataError(f"Chinese and English files are not row-aligned: record counts differ {counts}", path=str(p))
    n = next(iter(counts.values()))
    mismatched = 0
    cases = []
    for i in range(n):
        views = {lang: per_lang[lang][i][0] for lang in sources}
        cids = [per_lang[lang][i][1] for lang in sources]
        if len({str(c) for c in cids}) > 1:
            mismatched += 1
        prov_file = str(next(iter(sources.values()))) if len(sources) == 1 else str(p)
        meta = {"clm_case_id": cids[0]} if cids[0] is not None else {}
        cases.append(EditCase(f"clm-{i}", views, Provenance(prov_file, i), meta=meta))
    if mismatched:
        warns.append(f"{mismatched} row(s) have different case_id in the Chinese and English files "
                     "(rows are paired by position)")
    return LoadedCases(_limit(cases, limit), bench="clm", path=str(p), warnings=warns)


def _load_clm_merged(p: Path, want: list[str] | None, limit: int | None, warns: list[str],
                     recs: list | None = None) -> LoadedCases:
    recs = recs if recs is not None else _records(_read_json(p), p)
    if len(recs) % 2:
        raise DataError(f"the merged file must alternate zh, en rows; it has an odd number of rows ({len(recs)})",
                        path=str(p), row=len(recs) - 1)
    if want is not None:
        bad = [l for l in want if l not in ("zh", "en")]
        if bad:
            raise DataError(f"CLM-Bench has only zh and en, not {bad}", path=str(p))
    cases, suspicious = [], 0
    for i in range(len(recs) // 2):
        zv, zid = _clm_view(recs[2 * i], p, 2 * i, "")
        ev, eid = _clm_view(recs[2 * i + 1], p, 2 * i + 1, "")
        if not _has_cjk(zv.prompt) and _has_cjk(ev.prompt):
            suspicious += 1
        views = {"zh": zv, "en": ev}
        if want is not None:
            views = {l: views[l] for l in want}
        meta = {"clm_case_id": zid} if zid is not None else {}
        cases.append(EditCase(f"clm-{i}", views, Provenance(str(p), 2 * i), meta=meta))
    if suspicious:
        warns.append(f"{suspicious} pair(s) look swapped (the even row is not Chinese); "
                     "the merged file is read as zh, en, zh, en...")
    return LoadedCases(_limit(cases, limit), bench="clm", path=str(p), warnings=warns)


# --------------------------------------------------------------------------- KnowEdit ZsRE
#: KnowEdit's portability / locality groups, in the order their questions are kept
KNOWEDIT_PORTABILITY = ("Reasoning", "Subject_Aliasing", "Logical_Generalization")
KNOWEDIT_LOCALITY = ("Relation_Specificity", "Forgetfulness")


def _first_text(v: Any) -> str | None:
    """The first string of a KnowEdit value: ``"x"``, ``["x", ...]`` or ``[["x", "alias", ...]]``."""
    while isinstance(v, list) and v:
        v = v[0]
    return v if isinstance(v, str) else None


def _knowedit_group(rec: dict, key: str, order: Sequence[str], path: Path, row: int
                    ) -> tuple[list[list[str]], list[str]]:
    """Every (question, answer) of ``rec[key]`` (all its groups, known ones first) and each one's group name."""
    block = rec.get(key) or {}
    if not isinstance(block, dict):
        raise DataError(f"expected an object of groups, got {_typename(block)}", path=str(path), row=row, field=key)
    pairs, groups = [], []
    for g in list(order) + sorted(k for k in block if k not in order):
        items = block.get(g) or []
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            raise DataError(f"expected a list of {{prompt, ground_truth}}, got {_typename(items)}", path=str(path),
                            row=row, field=f"{key}.{g}")
        for i, it in enumerate(items):
            where = f"{key}.{g}[{i}]"
            if not isinstance(it, dict):
                raise DataError(f"expected an object, got {_typename(it)}", path=str(path), row=row, field=where)
            q, a = _first_text(it.get("prompt")), _first_text(it.get("ground_truth"))
            if q is None:
                raise DataError("missing or empty 'prompt'", path=str(path), row=row, field=where + ".prompt")
            if a is None:
                raise DataError("missing or empty 'ground_truth'", path=str(path), row=row,
                                field=where + ".ground_truth")
            pairs.append([q, a])
            groups.append(g)
    return pairs, groups


def load_knowedit(path: str | Path, langs: str | Sequence[str] | None = None,
                  limit: int | None = None) -> LoadedCases:
    """KnowEdit ZsRE (EasyEdit's ``ZsRE-test-all.json``; LTE's evaluation data): English cases ``knowedit-<row>``.

    Each record: ``subject, prompt, target_new, ground_truth, rephrase_prompt`` (or ``rephrase``) and
    ``portability`` / ``locality`` objects of groups (``Reasoning``, ``Subject_Aliasing``,
    ``Logical_Generalization``; ``Relation_Specificity``, ``Forgetfulness``), each a list of
    ``{prompt, ground_truth}`` (answers as a string, a list, or a list of alias lists: the first is used).
    EVERY locality and portability question is kept: the first in ``locality_prompt`` /
    ``portability_prompt``, the others in ``extra_locality`` / ``extra_portability``; ``meta`` names each
    one's group (``locality_groups``, ``portability_groups``).
    """
    p = Path(path)
    want = _want_langs(langs)
    if want is not None and want != ["en"]:
        raise DataError(f"KnowEdit ZsRE is English only; asked for {want}", path=str(p))
    recs = _records(_read_json(p), p)
    cases = []
    for row, rec in enumerate(recs[:limit] if limit is not None else recs):
        rec = _get_dict(rec, p, row)
        kw = dict(path=p, row=row)
        prompt = _get_str(rec, "prompt", nonempty=True, **kw)
        target = _get_str(rec, "target_new", nonempty=True, **kw)
        reph_key = "rephrase_prompt" if "rephrase_prompt" in rec else "rephrase"
        reph = _get_str(rec, reph_key, required=False, **kw)
        loc, loc_groups = _knowedit_group(rec, "locality", KNOWEDIT_LOCALITY, p, row)
        port, port_groups = _knowedit_group(rec, "portability", KNOWEDIT_PORTABILITY, p, row)
        view = LangView(subject=_get_str(rec, "subject", **kw), prompt=prompt, target_new=target,
                        target_old=_first_text(rec.get("ground_truth")), paraphrases=[reph] if reph else [],
                        locality_prompt=loc[0][0] if loc else None, locality_answer=loc[0][1] if loc else None,
                        portability_prompt=port[0][0] if port else None,
                        portability_answer=port[0][1] if port else None,
                        extra_locality=loc[1:], extra_portability=port[1:], style="question")
        cases.append(EditCase(f"knowedit-{row}", {"en": view}, Provenance(str(p), row),
                              meta={"locality_groups": loc_groups, "portability_groups": port_groups}))
    return LoadedCases(cases, bench="knowedit", path=str(p))


# --------------------------------------------------------------------------- xke JSONL
def case_from_dict(d: Any, *, path: str | Path = "<dict>", row: int = 0,
                   warnings: list[str] | None = None) -> EditCase:
    """Validate one :meth:`EditCase.to_dict` object and build the case.

    Unknown keys are reported in ``warnings`` (when given) and ignored.
    """
    p = Path(path) if not isinstance(path, Path) else path
    d = _get_dict(d, p, row)
    if "case_id" not in d:
        raise DataError("missing field", path=str(p), row=row, field="case_id")
    cid = d["case_id"]
    if isinstance(cid, bool) or not isinstance(cid, (str, int)) or (isinstance(cid, str) and not cid.strip()):
        raise DataError(f"expected a non-empty string, got {_typename(cid)} {cid!r:.40}",
                        path=str(p), row=row, field="case_id")
    if "views" not in d:
        raise DataError("missing field", path=str(p), row=row, field="views")
    views_in = d["views"]
    if not isinstance(views_in, dict) or not views_in:
        raise DataError(f"expected a non-empty object keyed by language, got {_typename(views_in)}",
                        path=str(p), row=row, field="views")
    extra = set(d) - {"case_id", "views", "meta", "provenance"}
    if extra and warnings is not None:
        warnings.append(f"{p}: record {row}: ignored unknown key(s) {sorted(extra)}")
    meta = d.get("meta") or {}
    if not isinstance(meta, dict):
        raise DataError(f"expected an object, got {_typename(meta)}", path=str(p), row=row, field="meta")
    views: dict[str, LangView] = {}
    for key, v in views_in.items():
        lang = _lang_or_error(key, p, row, f"views.{key}")
        if lang in views:
            raise DataError(f"language given twice ({lang})", path=str(p), row=row, field=f"views.{key}")
        pre = f"views.{key}."
        v = _get_dict(v, p, row, f"views.{key}")
        kw = dict(path=p, row=row, prefix=pre)
        extra = set(v) - _VIEW_FIELDS
        if extra and warnings is not None:
            warnings.append(f"{p}: record {row}: ignored unknown field(s) {sorted(pre + k for k in extra)}")
        paras = v.get("paraphrases", [])
        if paras is None:
            paras = []
        if not isinstance(paras, list) or not all(isinstance(x, str) for x in paras):
            raise DataError(f"expected a list of strings, got {_typename(paras)}", path=str(p), row=row,
                            field=pre + "paraphrases")
        for i, x in enumerate(paras):
            why = text_problem(x)
            if why:
                raise DataError(why, path=str(p), row=row, field=f"{pre}paraphrases[{i}]")
        style = v.get("style", "question")
        if style not in ("question", "cloze"):
            raise DataError(f"expected 'question' or 'cloze', got {style!r}", path=str(p), row=row, field=pre + "style")
        views[lang] = LangView(
            subject=_get_str(v, "subject", **kw),
            prompt=_get_str(v, "prompt", nonempty=True, **kw),
            target_new=_get_str(v, "target_new", nonempty=True, **kw),
            target_old=_get_str(v, "target_old", required=False, **kw),
            paraphrases=list(paras),
            locality_prompt=_get_str(v, "locality_prompt", required=False, **kw),
            locality_answer=_get_str(v, "locality_answer", required=False, **kw),
            portability_prompt=_get_str(v, "portability_prompt", required=False, **kw),
            portability_answer=_get_str(v, "portability_answer", required=False, **kw),
            style=style,
            locality_prefix=_get_str(v, "locality_prefix", required=False, **kw) or "",
            extra_locality=_qa_pairs(v.get("extra_locality"), p, row, pre + "extra_locality"),
            extra_portability=_qa_pairs(v.get("extra_portability"), p, row, pre + "extra_portability"))
    return EditCase(str(cid), views, Provenance(str(p), row), meta=dict(meta))


def _qa_pairs(v: Any, path: Path, row: int, fname: str) -> list[list[str]]:
    """A list of ``[question, answer]`` string pairs (``None`` -> empty)."""
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, (list, tuple)) and len(x) == 2
                                          and all(isinstance(y, str) for y in x) for x in v):
        raise DataError(f"expected a list of [question, answer] string pairs, got {_typename(v)} {v!r:.60}",
                        path=str(path), row=row, field=fname)
    return [list(x) for x in v]


def read_jsonl(path: str | Path, langs: str | Sequence[str] | None = None,
               limit: int | None = None) -> LoadedCases:
    """xke's own edit format: one :meth:`EditCase.to_dict` object per line (see docs/edit-format.md).

    Blank lines are skipped; ``provenance.row`` is the 1-based line number.
    With ``langs``, other views are dropped and cases with none of ``langs``
    are skipped (counted in ``skipped``).
    """
    p = Path(path)
    if p.is_dir():
        cands = sorted(p.glob("*.jsonl"))
        if len(cands) != 1:
            raise DataError(f"expected one .jsonl file in this folder, found {len(cands)}", path=str(p))
        p = cands[0]
    want = _want_langs(langs)
    warns: list[str] = []
    cases: list[EditCase] = []
    seen: dict[str, int] = {}
    skipped = 0
    for lineno, line in enumerate(_read_lines(p), start=1):
        if not line.strip():
            continue
        d = _json_loads(line, p, lineno)
        case = case_from_dict(d, path=p, row=lineno, warnings=warns)
        if case.case_id in seen:
            raise DataError(f"duplicate case_id {case.case_id!r} (first on line {seen[case.case_id]})",
                            path=str(p), row=lineno, field="case_id")
        seen[case.case_id] = lineno
        if want is not None:
            case.views = {l: v for l, v in case.views.items() if l in want}
            if not case.views:
                skipped += 1
                continue
        cases.append(case)
        if limit is not None and len(cases) >= limit:
            break
    if skipped:
        warns.append(f"skipped {skipped} case(s) with none of the languages {want}")
    return LoadedCases(cases, bench="jsonl", path=str(p), skipped=skipped, warnings=warns)


def write_jsonl(path: str | Path, cases: Iterable[EditCase]) -> Path:
    """Write cases in xke's JSONL format (UTF-8, one object per line); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as f:
        for c in cases:
            f.write(c.to_json() + "\n")
    return p


# --------------------------------------------------------------------------- dispatch
_LOADERS = {"bizsre": load_bizsre, "mzsre": load_mzsre, "clm": load_clm, "knowedit": load_knowedit,
            "jsonl": read_jsonl}


def bench_name(bench: str) -> str:
    """Canonical benchmark name (``bi-zsre`` -> ``bizsre``); clear error when unknown."""
    b = BENCH_ALIASES.get(str(bench).strip().lower())
    if b is None:
        raise XkeError(f"unknown benchmark {bench!r}; use one of {', '.join(BENCHES)}")
    return b


def load_bench(bench: str, path: str | Path, langs: str | Sequence[str] | None = None,
               limit: int | None = None) -> LoadedCases:
    """Load benchmark ``bench`` (``bizsre``, ``mzsre``, ``clm`` or ``jsonl``) from ``path``."""
    if path is None or str(path) == "":
        raise XkeError(f"no data path given for benchmark {bench!r} (use --data PATH)")
    b = bench_name(bench)
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError("no such file or folder", path=str(p))
    _check_regular(p)
    cases = _LOADERS[b](p, langs=langs, limit=limit)
    if not cases and not cases.skipped and limit != 0:
        raise DataError("no records (empty file)", path=cases.path or str(p))
    return cases


def check_bench(bench: str, path: str | Path, langs: str | Sequence[str] | None = None) -> dict[str, Any]:
    """The ``xke data check`` summary: bench, path, cases, languages, skipped, warnings.

    ``bench`` may also be ``mzsre-train`` (training pairs; ``cases`` = pairs kept).
    """
    b = str(bench).strip().lower()
    if b in ("mzsre-train", "mzsre_train"):
        p = Path(path).expanduser()
        if not p.exists():
            raise DataError("no such file or folder", path=str(p))
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            pairs = load_mzsre_train(p, langs)
        if not len(pairs):
            raise DataError("no usable training pairs (empty file, or every line broken)", path=str(p))
        return pairs.summary()
    return load_bench(bench, path, langs=langs).summary()


def train_pairs_cases(pairs: TrainPairs) -> list[EditCase]:
    """MzsRE training pairs as edit cases (one per line, every language; the question stands in for the
    subject, which the training file does not give)."""
    langs = pairs.languages
    return [EditCase(f"mzsre-train-{line}",
                     {l: LangView(subject=pairs.pairs[l][k][0], prompt=pairs.pairs[l][k][0],
                                  target_new=pairs.pairs[l][k][1]) for l in langs},
                     provenance=Provenance(pairs.path, line))
            for k, line in enumerate(pairs.lines)]


def convert_bench(bench: str, path: str | Path, out: str | Path, langs: str | Sequence[str] | None = None,
                  limit: int | None = None) -> tuple[int, Path]:
    """``xke data convert``: load ``bench`` from ``path`` and write its cases as xke JSONL to ``out``;
    returns (number of cases, output path)."""
    b = str(bench).strip().lower()
    if b in ("mzsre-train", "mzsre_train"):
        p = Path(path).expanduser()
        if not p.exists():
            raise DataError("no such file or folder", path=str(p))
        cases = _limit(train_pairs_cases(load_mzsre_train(p, langs)), limit)
    else:
        cases = list(load_bench(bench, path, langs=langs, limit=limit))
    if not cases:
        raise DataError("no cases to write", path=str(path))
    o = Path(out).expanduser()
    o.parent.mkdir(parents=True, exist_ok=True)
    return len(cases), write_jsonl(o, cases)
