"""Released training formats, read as xke rows and pairs (no conversion by hand).

- XE-IT rows (:func:`load_xeit_rows`): xke's ``train.jsonl`` rows (``messages``), or ShareGPT /
  ``conversations`` JSON as the X-KDE release and LTE ship it: a JSON array (or JSONL) of
  ``{"id", "conversations": [{"from": "human"|"gpt"|"system", "value": ...}]}``.
- TL-PO pairs (:func:`load_pairs`): xke's pairs folder (``train.jsonl``/``validation.jsonl``), or the
  release's layout ``{"prompt", "choice", "reject", "score-diff"}`` (``NAME-train.json`` and
  ``NAME-dev.json``), whose ``prompt`` is a rendered string (``"[INST]{user} [/INST] "`` in the release;
  ChatML is recognised too): the user message is taken out of it, so the model's own chat template renders
  it again.

Rows without xke's metadata get what TL-PO sampling needs inferred (:func:`fill_row_metadata`): the target
language from X-KDE's instruction ("… respond to the subsequent query in Chinese.") or the answer's script,
``with_edit`` from the ``[Updated Information]`` block; ``imported: true`` marks them so preset filters on
xke-only fields (sections, scopes) do not drop them. Bad records raise one-line
:class:`~xke.errors.DataError` naming the file, the record and the field.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from ..errors import DataError, XkeError
from ..prompts import UPDATED_INFORMATION

#: ShareGPT "from" -> chat role
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "model": "assistant", "bot": "assistant", "system": "system"}
CHAT_ROLES = ("system", "user", "assistant")


def _read_records(path: Path) -> list:
    """A JSON array, or JSON Lines, of records; clear errors for anything else."""
    from ..data.loaders import read_text_file

    text = read_text_file(path)
    s = text.lstrip()
    if s.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON: {e.msg} (line {e.lineno}, column {e.colno})", path=str(path)) from None
        return data
    recs = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON on line {lineno}: {e.msg} (column {e.colno}); expected a JSON array "
                            "or one JSON object per line", path=str(path), row=lineno - 1) from None
    return recs


def _str(rec: dict, key: str, path: Path, row: int, prefix: str = "") -> str:
    if key not in rec:
        raise DataError("missing field", path=str(path), row=row, field=prefix + key)
    v = rec[key]
    if not isinstance(v, str):
        raise DataError(f"expected a string, got {type(v).__name__ if v is not None else 'null'}",
                        path=str(path), row=row, field=prefix + key)
    return v


def _obj(rec: Any, path: Path, row: int) -> dict:
    if not isinstance(rec, dict):
        raise DataError(f"expected a JSON object, got {type(rec).__name__}", path=str(path), row=row)
    return rec


# ----------------------------------------------------------------------------- XE-IT rows
def conversation_to_messages(rec: dict, path: Path, row: int) -> list[dict[str, str]]:
    """Chat messages of one ShareGPT record (``conversations``) or xke row (``messages``), validated:
    roles known, contents strings, the last turn the assistant's."""
    if "messages" in rec:
        key, turns = "messages", rec["messages"]
    elif "conversations" in rec:
        key, turns = "conversations", rec["conversations"]
    else:
        raise DataError("missing field (expected 'conversations' (ShareGPT) or 'messages')", path=str(path),
                        row=row, field="conversations")
    if not isinstance(turns, list) or not turns:
        raise DataError("expected a non-empty list of turns", path=str(path), row=row, field=key)
    msgs = []
    for i, t in enumerate(turns):
        where = f"{key}[{i}]."
        if not isinstance(t, dict):
            raise DataError(f"expected a JSON object, got {type(t).__name__}", path=str(path), row=row,
                            field=f"{key}[{i}]")
        if "from" in t or "value" in t:
            who = _str(t, "from", path, row, where)
            role = SHAREGPT_ROLES.get(who.strip().lower())
            if role is None:
                raise DataError(f"unknown speaker {who!r}; use one of {sorted(SHAREGPT_ROLES)}", path=str(path),
                                row=row, field=where + "from")
            content = _str(t, "value", path, row, where)
        else:
            role = _str(t, "role", path, row, where)
            if role not in CHAT_ROLES:
                raise DataError(f"unknown role {role!r}; use one of {list(CHAT_ROLES)}", path=str(path), row=row,
                                field=where + "role")
            content = _str(t, "content", path, row, where)
        msgs.append({"role": role, "content": content})
    if msgs[-1]["role"] != "assistant":
        raise DataError(f"the last turn must be the answer (assistant / gpt), got {msgs[-1]['role']!r}",
                        path=str(path), row=row, field=f"{key}[{len(msgs) - 1}]")
    if not any(m["role"] == "user" for m in msgs):
        raise DataError("no user (human) turn", path=str(path), row=row, field=key)
    return msgs


_LANG_IN_INSTRUCTION = re.compile(r"respond to the subsequent (?:query|question) in ([A-Z][a-z]+)")


def guess_lang(user: str, answer: str) -> str:
    """The answer's language: named by X-KDE's instruction, else from the answer's script (zh, th, ru, ja, else en)."""
    from ..data.languages import LANGUAGE_NAMES
    from .scorers import _char_script

    m = _LANG_IN_INSTRUCTION.search(user)
    if m:
        by_name = {v.lower(): k for k, v in LANGUAGE_NAMES.items()}
        if m.group(1).lower() in by_name:
            return by_name[m.group(1).lower()]
    scripts = [s for s in (_char_script(c) for c in answer) if s]
    if scripts:
        top = max(set(scripts), key=scripts.count)
        return {"han": "zh", "thai": "th", "cyrillic": "ru", "kana": "ja"}.get(top, "en")
    return "en"


def fill_row_metadata(row: dict, index: int) -> dict:
    """Add the fields TL-PO sampling reads (ids, languages, section, scope, with_edit) when a row lacks them."""
    if all(k in row for k in ("id", "fact_id", "tgt_lang", "src_lang", "section", "scope", "with_edit")):
        return row
    msgs = row["messages"]
    user = next((m["content"] for m in reversed(msgs) if m["role"] == "user"), "")
    lang = guess_lang(user, msgs[-1]["content"])
    rid = row.get("id", index)
    out = {"id": rid, "fact_id": row.get("fact_id", rid), "tgt_lang": row.get("tgt_lang", lang),
           "src_lang": row.get("src_lang", lang), "section": row.get("section", "imported"),
           "scope": row.get("scope", "imported"), "with_edit": row.get("with_edit", UPDATED_INFORMATION in user),
           "imported": True}
    return {**row, **out}


def read_conversations(path: str | Path) -> list[dict]:
    """xke rows (``messages`` + inferred metadata) from a ShareGPT / conversations file or an xke rows file."""
    p = Path(path)
    recs = _read_records(p)
    if not isinstance(recs, list):
        raise DataError(f"expected a JSON array of records, got {type(recs).__name__}", path=str(p))
    rows = []
    for i, rec in enumerate(recs):
        rec = _obj(rec, p, i)
        msgs = conversation_to_messages(rec, p, i)
        row = {k: v for k, v in rec.items() if k not in ("conversations", "messages")}
        row["messages"] = msgs
        rows.append(fill_row_metadata(row, i))
    return rows


def load_xeit_rows(data: str | Path) -> tuple[list[dict], list[dict]]:
    """(train rows, validation rows) from an xke data folder (``train.jsonl`` [+ ``validation.jsonl``]),
    a ShareGPT / conversations JSON file, or a folder holding one (``*train*.json`` [+ ``*dev*``/``*val*``])."""
    p = Path(data).expanduser()
    if not p.exists():
        raise DataError("no such file or folder", path=str(p))
    if p.is_file():
        return _nonempty(read_conversations(p), p), []
    if (p / "train.jsonl").exists():
        val = p / "validation.jsonl"
        return (_nonempty(read_conversations(p / "train.jsonl"), p / "train.jsonl"),
                read_conversations(val) if val.exists() else [])
    cands = sorted(p.glob("*.json"))
    train = [f for f in cands if "train" in f.name.lower()] or ([cands[0]] if len(cands) == 1 else [])
    if len(train) != 1:
        raise DataError(f"no train.jsonl, and not one ShareGPT *.json training file here (found "
                        f"{[f.name for f in cands]})", path=str(p))
    dev = [f for f in cands if f != train[0] and any(k in f.name.lower() for k in ("dev", "val", "test"))]
    return _nonempty(read_conversations(train[0]), train[0]), read_conversations(dev[0]) if dev else []


def _nonempty(rows: list[dict], path: Path) -> list[dict]:
    if not rows:
        raise DataError("empty file (no training rows)", path=str(path))
    return rows


# ----------------------------------------------------------------------------- TL-PO pairs
_INST = re.compile(r"^\s*(?:<s>)?\s*\[INST\](.*)\[/INST\]\s*$", re.S)
_CHATML_USER = re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.S)
_CHATML_SYSTEM = re.compile(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", re.S)


def prompt_messages(prompt: str) -> list[dict[str, str]]:
    """Chat messages of a rendered prompt string: Llama-2 ``[INST] … [/INST]`` or ChatML; otherwise the whole
    string is the user message."""
    m = _INST.match(prompt)
    if m:
        return [{"role": "user", "content": m.group(1).strip()}]
    users = _CHATML_USER.findall(prompt)
    if users:
        sys_ = _CHATML_SYSTEM.findall(prompt)
        return ([{"role": "system", "content": sys_[0]}] if sys_ else []) + [{"role": "user", "content": users[-1]}]
    return [{"role": "user", "content": prompt}]


def release_pair(rec: Any, path: Path, row: int) -> dict[str, Any]:
    """One release pair ``{prompt, choice, reject, score-diff}`` as an xke pair (conversational)."""
    rec = _obj(rec, path, row)
    prompt = rec.get("prompt")
    if isinstance(prompt, list):
        msgs = conversation_to_messages({"messages": prompt + [{"role": "assistant", "content": ""}]}, path, row)[:-1]
    else:
        msgs = prompt_messages(_str(rec, "prompt", path, row))
    chosen = _str(rec, "choice" if "choice" in rec or "chosen" not in rec else "chosen", path, row)
    rejected = _str(rec, "reject" if "reject" in rec or "rejected" not in rec else "rejected", path, row)
    diff = rec.get("score-diff")
    if diff is not None and (isinstance(diff, bool) or not isinstance(diff, (int, float))):
        raise DataError(f"expected a number, got {diff!r:.40}", path=str(path), row=row, field="score-diff")
    user = msgs[-1]["content"]
    lang = guess_lang(user, chosen)
    pid = hashlib.sha256(json.dumps(msgs, ensure_ascii=False).encode()).hexdigest()[:16]
    return {"prompt": msgs, "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}], "prompt_id": pid, "kind": "release",
            "section": "imported", "scope": "imported", "tgt_lang": lang, "src_lang": lang,
            "score_diff": None if diff is None else float(diff)}


def read_release_pairs(path: str | Path) -> list[dict[str, Any]]:
    """Pairs of a release-layout file (JSON array or JSONL)."""
    p = Path(path)
    recs = _read_records(p)
    if not isinstance(recs, list):
        raise DataError(f"expected a JSON array of pairs, got {type(recs).__name__}", path=str(p))
    return [release_pair(r, p, i) for i, r in enumerate(recs)]


def load_pairs(path: str | Path) -> tuple[list[dict], list[dict], str]:
    """(train pairs, validation pairs, layout) from an xke pairs folder or the release's layout: a
    ``NAME-train.json`` file (its ``NAME-dev.json`` beside it is the validation set) or a folder of them."""
    from .tlpo import read_jsonl_rows

    p = Path(path).expanduser()
    if not p.exists():
        raise XkeError(f"{p}: no such pairs file or folder")
    if p.is_dir() and (p / "train.jsonl").exists():
        first = read_jsonl_rows(p / "train.jsonl")[:1]
        if not first or "chosen" in first[0] and isinstance(first[0].get("prompt"), list):
            val = p / "validation.jsonl"
            return read_jsonl_rows(p / "train.jsonl"), read_jsonl_rows(val) if val.exists() else [], "xke"
        train_f, dev_f = p / "train.jsonl", p / "validation.jsonl"
    elif p.is_dir():
        trains = sorted(p.glob("*-train.json"))
        if not trains:
            raise DataError("no train.jsonl (xke pairs) and no NAME-train.json (release pairs) here", path=str(p))
        train = [x for f in trains for x in read_release_pairs(f)]
        devs = [f.with_name(f.name[:-len("-train.json")] + "-dev.json") for f in trains]
        dev = [x for f in devs if f.exists() for x in read_release_pairs(f)]
        return train, dev, "release"
    else:
        train_f = p
        dev_f = p.with_name(p.name.replace("-train.", "-dev.")) if "-train." in p.name else None
    train = read_release_pairs(train_f)
    dev = read_release_pairs(dev_f) if dev_f is not None and dev_f.exists() and dev_f != train_f else []
    return train, dev, "release"


def with_system(messages: list[dict[str, str]], system: str | None) -> list[dict[str, str]]:
    """``messages`` with ``system`` as the first (system) message, unless it is ``None`` or one is there."""
    if system is None or (messages and messages[0].get("role") == "system"):
        return list(messages)
    return [{"role": "system", "content": system}] + list(messages)
