"""The edit memory behind the server: an interface and its SQLite implementation.

The HTTP layer talks to an :class:`EditMemory` only (add, get, list, retire,
roll back, audit log), so another backend -- a server database such as
PostgreSQL shared by several replicas -- can replace SQLite by implementing
this protocol (and a :class:`xke.memory.retrievers.Retriever` over it).
:class:`SQLiteMemory`, the default, wraps :class:`xke.memory.store.EditStore`:
every change is one transaction that also writes its audit row (who, when,
what), so a failed request leaves nothing half-written.

:func:`edits_from_json` turns an API body (one edit, a list, or
``{"edits": [...]}``) into validated :class:`MemoryEdit` objects, or raises
:class:`xke.errors.DataError` naming the field (``edits[2].target``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import DataError
from ..memory.store import AuditEntry, EditStore, MemoryEdit, edit_from_dict

#: API field -> store field (the API speaks OpenAI-style words: target, language)
API_FIELDS = {"prompt": "prompt", "target": "target_new", "subject": "subject", "language": "lang",
              "target_old": "target_old"}
#: accepted spellings of the same fields (the store's own names)
API_ALIASES = {"target_new": "target", "lang": "language"}
MAX_FIELD_CHARS = 4000
MAX_EDITS_PER_REQUEST = 1000


@runtime_checkable
class EditMemory(Protocol):
    """What the server needs from an edit memory. Writes take ``actor`` (who) and are audited."""

    def add(self, edits: list[MemoryEdit], *, actor: str) -> list[int]:
        """Store ``edits`` all or none; their ids in order."""

    def get(self, edit_id: int) -> MemoryEdit | None:
        """One edit by id (retired ones too), or None."""

    def list(self, *, language: str | None = None, active: bool | None = True, since: float | None = None,
             until: float | None = None, limit: int | None = None) -> list[MemoryEdit]:
        """Edits in id order, filtered by language, state and creation time."""

    def retire(self, edit_id: int, *, actor: str) -> bool:
        """Retire one edit; False when it was not active."""

    def rollback(self, to_time: float, *, actor: str) -> dict[str, int]:
        """Make the active set what it was at ``to_time``; counts retired/reactivated."""

    def audit(self, *, since: float | None = None, limit: int | None = None) -> list[AuditEntry]:
        """Recorded changes, oldest first."""

    def count(self) -> int:
        """Active edits."""

    def generation(self) -> int:
        """Grows with every write."""

    def close(self) -> None:
        """Release connections."""


class SQLiteMemory:
    """:class:`EditMemory` over an :class:`EditStore` file (SQLite, WAL; safe across threads and processes)."""

    backend = "sqlite"

    def __init__(self, store: EditStore | str | Path):
        self.store = store if isinstance(store, EditStore) else EditStore(store)
        self.path = self.store.path

    def add(self, edits, *, actor):
        return self.store.add_many(edits, actor=actor)

    def get(self, edit_id):
        return self.store.get(edit_id)

    def list(self, *, language=None, active=True, since=None, until=None, limit=None):
        timed = since is not None or until is not None
        out = []
        for e in self.store.iter(active=active, lang=language, limit=None if timed else limit):
            if (since is not None and e.created < since) or (until is not None and e.created > until):
                continue
            out.append(e)
            if limit is not None and len(out) >= limit:
                break
        return out

    def retire(self, edit_id, *, actor):
        return self.store.retire([int(edit_id)], actor=actor) > 0

    def rollback(self, to_time, *, actor):
        return self.store.rollback(float(to_time), actor=actor)

    def audit(self, *, since=None, limit=None):
        return self.store.audit_log(since=since, limit=limit)

    def count(self):
        return self.store.count(active=True)

    def generation(self):
        return self.store.generation()

    def close(self):
        self.store.close()


def edit_to_json(e: MemoryEdit) -> dict[str, Any]:
    """An edit as the API shows it."""
    return {"id": e.id, "object": "edit", "language": e.lang, "prompt": e.prompt, "target": e.target_new,
            "subject": e.subject, "target_old": e.target_old, "created": e.created, "active": e.active,
            "retired": e.retired}


def edits_from_json(body: Any) -> list[MemoryEdit]:
    """Validated edits from an API body: one edit object, a list of them, or ``{"edits": [...]}``.

    Fields: ``prompt``, ``target``, ``language`` (required), ``subject``, ``target_old``;
    ``target_new`` / ``lang`` are accepted spellings. Raises :class:`DataError` whose ``field`` is the
    JSON path of the first bad field (``edits[1].language``); nothing is stored by this function.
    """
    if isinstance(body, dict) and "edits" in body:
        extra = sorted(set(body) - {"edits"})
        if extra:
            raise DataError(f"unknown field(s) {extra} beside 'edits'", field=extra[0])
        items, prefix = body["edits"], "edits"
        if not isinstance(items, list):
            raise DataError(f"expected a list of edits, got {type(items).__name__}", field="edits")
    elif isinstance(body, list):
        items, prefix = body, "edits"
    elif isinstance(body, dict):
        return [_one_edit(body, "")]
    else:
        raise DataError(f"expected an edit object or a list of edits, got {type(body).__name__}", field="body")
    if not items:
        raise DataError("no edit given", field=prefix)
    if len(items) > MAX_EDITS_PER_REQUEST:
        raise DataError(f"{len(items)} edits in one request; at most {MAX_EDITS_PER_REQUEST}", field=prefix)
    return [_one_edit(item, f"{prefix}[{i}].") for i, item in enumerate(items)]


def _one_edit(d: Any, prefix: str) -> MemoryEdit:
    if not isinstance(d, dict):
        raise DataError(f"expected an edit object, got {type(d).__name__}", field=prefix.rstrip(".") or "body")
    out: dict[str, Any] = {}
    for alias, api in API_ALIASES.items():
        if alias in d and api in d:
            raise DataError(f"given twice (as '{alias}' and '{api}')", field=prefix + api)
    for key, value in d.items():
        api = API_ALIASES.get(key, key)
        if api not in API_FIELDS:
            raise DataError(f"unknown field; valid: {', '.join(API_FIELDS)}", field=prefix + key)
        if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
            raise DataError(f"longer than {MAX_FIELD_CHARS} characters", field=prefix + api)
        out[API_FIELDS[api]] = value
    store_to_api = {v: k for k, v in API_FIELDS.items()}
    try:
        return edit_from_dict(out)
    except DataError as e:
        name = store_to_api.get(e.field or "", e.field or "body")
        msg = str(e).split(": ", 1)[1] if e.field else str(e)
        raise DataError(msg, field=prefix + name) from None
