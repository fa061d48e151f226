"""The persistent edit memory: a SQLite file of edit descriptors.

Every in-context method (IKE, LTE, X-KDE inference in ``retrieve`` mode)
reads its edits from an :class:`EditStore`. The store is the source of truth;
embedding indexes (:mod:`xke.memory.index`) are rebuilt or updated from it.

- SQLite in WAL mode, one connection per thread and per process, a busy
  timeout, and every write in one transaction: several threads and processes
  may write at once; a writer killed mid-stream loses nothing it committed.
  ``synchronous=NORMAL`` (the default) survives a killed process;
  ``durable=True`` (``synchronous=FULL``) also survives power loss.
- Rows: id, lang, prompt, target_new, subject, target_old, case_id, created
  (Unix time), active, retired (time it was retired, if it is), batch
  (batch/stream id).
- ``add`` / ``add_many``, ``retire``, ``delete``, ``rollback(to_time)``
  (the active set becomes what it was at that time), ``list``, ``get``,
  ``export_jsonl`` / ``import_jsonl`` (a malformed line is reported with its
  line number and the other lines are kept).
- ``generation()`` grows with every write; indexes use it to know they are
  up to date.
- Audit: ``add_many`` / ``retire`` / ``rollback`` take ``actor=`` (who); when
  given, an ``audit`` row (time, actor, action, edit ids, detail) is written
  in the same transaction as the change; ``audit_log()`` reads them. Files
  made before the audit table get it when opened.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from ..errors import DataError, XkeError

SCHEMA = """
CREATE TABLE IF NOT EXISTS edits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    lang TEXT NOT NULL,
    prompt TEXT NOT NULL,
    target_new TEXT NOT NULL,
    subject TEXT NOT NULL DEFAULT '',
    target_old TEXT,
    case_id TEXT,
    created REAL NOT NULL,
    active INTEGER NOT NULL DEFAULT 1,
    retired REAL,
    batch TEXT
);
CREATE INDEX IF NOT EXISTS edits_active ON edits(active);
CREATE INDEX IF NOT EXISTS edits_batch ON edits(batch);
CREATE INDEX IF NOT EXISTS edits_created ON edits(created);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    edit_ids TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS audit_time ON audit(time);
INSERT OR IGNORE INTO meta(key, value) VALUES ('generation', '0');
INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', '1');
INSERT OR IGNORE INTO meta(key, value) VALUES ('uuid', lower(hex(randomblob(16))));
"""

_FIELDS = ("lang", "prompt", "target_new", "subject", "target_old", "case_id", "created", "active",
           "retired", "batch")


@dataclass
class MemoryEdit:
    """One stored edit descriptor."""

    lang: str
    prompt: str
    target_new: str
    subject: str = ""
    target_old: str | None = None
    case_id: str | None = None
    created: float = field(default_factory=time.time)
    active: bool = True
    retired: float | None = None
    batch: str | None = None
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_request(cls, req: Any, *, batch: str | None = None) -> "MemoryEdit":
        """From an :class:`xke.data.schema.EditRequest` (or anything with the same attributes)."""
        return cls(lang=req.lang, prompt=req.prompt, target_new=req.target_new, subject=req.subject or "",
                   target_old=req.target_old, case_id=getattr(req, "case_id", None), batch=batch)


def _row_to_edit(row: sqlite3.Row | tuple) -> MemoryEdit:
    (id_, lang, prompt, target_new, subject, target_old, case_id, created, active, retired, batch) = row
    return MemoryEdit(id=id_, lang=lang, prompt=prompt, target_new=target_new, subject=subject,
                      target_old=target_old, case_id=case_id, created=created, active=bool(active),
                      retired=retired, batch=batch)


_COLS = "id, lang, prompt, target_new, subject, target_old, case_id, created, active, retired, batch"


@dataclass
class AuditEntry:
    """One recorded change: when, who (``actor``), what (``action`` on ``edit_ids``, ``detail``)."""

    id: int
    time: float
    actor: str
    action: str
    edit_ids: list[int]
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ImportResult:
    """What :meth:`EditStore.import_jsonl` did: ids added, and ``(line number, message)`` per rejected line."""

    added: list[int]
    errors: list[tuple[int, str]]


class EditStore:
    """A SQLite edit memory at ``path`` (created if missing). Safe to share between threads and processes.

    ``path=None`` makes a private temporary file, deleted by :meth:`close`.
    """

    def __init__(self, path: str | Path | None = None, *, durable: bool = False, timeout: float = 60.0):
        self._tmpdir = None
        if path is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="xke-memory-")
            path = Path(self._tmpdir.name) / "memory.sqlite"
        self.path = Path(path).expanduser()
        if self.path.exists() and self.path.is_dir():
            raise XkeError(f"edit memory {self.path} is a directory; give a file path (e.g. memory.sqlite)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.durable = durable
        self.timeout = timeout
        self._local = threading.local()
        self._pid = os.getpid()
        self._all_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        conn = self._conn()
        try:
            self._init_schema(conn)
        except sqlite3.DatabaseError as e:
            raise XkeError(f"{self.path} is not an xke edit memory (SQLite): {e}") from e

    # --- connections -------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if os.getpid() != self._pid:  # forked: never reuse the parent's connections
            self._local = threading.local()
            self._pid = os.getpid()
            self._all_conns = []
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise XkeError(f"cannot put {self.path} in WAL mode (got {mode}); use a local file system")
            conn.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            self._local.conn = conn
            with self._lock:
                self._all_conns.append(conn)
        return conn

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        with self._write(conn):
            for stmt in SCHEMA.strip().split(";"):
                if stmt.strip():
                    conn.execute(stmt)

    class _Tx:
        def __init__(self, conn: sqlite3.Connection):
            self.conn = conn

        def __enter__(self):
            self.conn.execute("BEGIN IMMEDIATE")
            return self.conn

        def __exit__(self, exc_type, exc, tb):
            if exc_type is None:
                self.conn.execute("COMMIT")
            else:
                self.conn.execute("ROLLBACK")
            return False

    def _write(self, conn: sqlite3.Connection | None = None) -> "_Tx":
        return EditStore._Tx(conn or self._conn())

    @staticmethod
    def _bump(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")

    @staticmethod
    def _audit(conn: sqlite3.Connection, actor: str | None, action: str, ids: Sequence[int],
               detail: dict[str, Any] | None = None) -> None:
        """Record a change inside the caller's transaction (nothing when ``actor`` is None)."""
        if actor is not None:
            conn.execute("INSERT INTO audit (time, actor, action, edit_ids, detail) VALUES (?,?,?,?,?)",
                         (time.time(), str(actor), action, json.dumps([int(i) for i in ids]),
                          json.dumps(detail or {}, ensure_ascii=False)))

    def close(self) -> None:
        """Close this process's connections (and delete a temporary store)."""
        with self._lock:
            for c in self._all_conns:
                try:
                    c.close()
                except sqlite3.Error:
                    pass
            self._all_conns = []
        self._local = threading.local()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> "EditStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- writes --------------------------------------------------------------------
    def add(self, edit: MemoryEdit | Any, *, batch: str | None = None, actor: str | None = None) -> int:
        """Insert one edit (a :class:`MemoryEdit` or an ``EditRequest``); returns its id."""
        return self.add_many([edit], batch=batch, actor=actor)[0]

    def add_many(self, edits: Iterable[MemoryEdit | Any], *, batch: str | None = None,
                 actor: str | None = None) -> list[int]:
        """Insert edits in one transaction (all or none); returns their ids in order. ``actor``: audit who."""
        rows = []
        for e in edits:
            if not isinstance(e, MemoryEdit):
                e = MemoryEdit.from_request(e, batch=batch)
            elif batch is not None and e.batch is None:
                e = MemoryEdit(**{**asdict(e), "batch": batch})
            _validate(e)
            rows.append((e.lang, e.prompt, e.target_new, e.subject or "", e.target_old, e.case_id,
                         float(e.created), int(bool(e.active)), e.retired, e.batch))
        if not rows:
            return []
        conn = self._conn()
        ids = []
        with self._write(conn):
            for r in rows:
                cur = conn.execute(f"INSERT INTO edits ({', '.join(_FIELDS)}) VALUES (?,?,?,?,?,?,?,?,?,?)", r)
                ids.append(cur.lastrowid)
            self._bump(conn)
            self._audit(conn, actor, "add", ids, {"edits": [{"lang": r[0], "prompt": r[1], "target_new": r[2]}
                                                            for r in rows]} if actor is not None else None)
        return ids

    def retire(self, ids: Sequence[int] | None = None, *, batch: str | None = None,
               actor: str | None = None) -> int:
        """Mark edits inactive (kept for the record); by id and/or by batch. Returns how many changed."""
        if ids is None and batch is None:
            raise XkeError("retire: give edit ids or a batch id")
        now = time.time()
        conn = self._conn()
        n = 0
        with self._write(conn):
            changed = self._active_ids_in(conn, ids, batch) if actor is not None else []
            if ids:
                for chunk in _chunks(list(ids), 500):
                    q = ",".join("?" * len(chunk))
                    n += conn.execute(f"UPDATE edits SET active = 0, retired = ? WHERE active = 1 AND id IN ({q})",
                                      [now, *chunk]).rowcount
            if batch is not None:
                n += conn.execute("UPDATE edits SET active = 0, retired = ? WHERE active = 1 AND batch = ?",
                                  (now, batch)).rowcount
            if n:
                self._bump(conn)
                self._audit(conn, actor, "retire", changed, {"batch": batch} if batch is not None else None)
        return n

    @staticmethod
    def _active_ids_in(conn: sqlite3.Connection, ids: Sequence[int] | None, batch: str | None) -> list[int]:
        """Active edits among ``ids`` or in ``batch`` (what a retire is about to change, for the audit)."""
        out: set[int] = set()
        for chunk in _chunks([int(i) for i in ids or []], 500):
            q = ",".join("?" * len(chunk))
            out.update(r[0] for r in conn.execute(f"SELECT id FROM edits WHERE active = 1 AND id IN ({q})", chunk))
        if batch is not None:
            out.update(r[0] for r in conn.execute("SELECT id FROM edits WHERE active = 1 AND batch = ?", (batch,)))
        return sorted(out)

    def delete(self, ids: Sequence[int]) -> int:
        """Remove edits for good (what an in-context method's ``restore()`` does). Returns how many."""
        conn = self._conn()
        n = 0
        with self._write(conn):
            for chunk in _chunks(list(ids), 500):
                q = ",".join("?" * len(chunk))
                n += conn.execute(f"DELETE FROM edits WHERE id IN ({q})", chunk).rowcount
            if n:
                self._bump(conn)
        return n

    def rollback(self, to_time: float, *, actor: str | None = None) -> dict[str, int]:
        """Make the active set what it was at ``to_time`` (Unix seconds).

        Edits created after ``to_time`` are retired; edits created at or before it
        and retired after it become active again. Nothing is deleted.
        """
        now = time.time()
        conn = self._conn()
        with self._write(conn):
            if actor is not None:
                going = [r[0] for r in conn.execute("SELECT id FROM edits WHERE created > ? AND active = 1",
                                                    (to_time,))]
                coming = [r[0] for r in conn.execute("SELECT id FROM edits WHERE created <= ? AND active = 0 "
                                                     "AND retired > ?", (to_time, to_time))]
            retired = conn.execute("UPDATE edits SET active = 0, retired = ? WHERE created > ? AND active = 1",
                                   (now, to_time)).rowcount
            revived = conn.execute("UPDATE edits SET active = 1, retired = NULL "
                                   "WHERE created <= ? AND active = 0 AND retired > ?", (to_time, to_time)).rowcount
            if retired or revived:
                self._bump(conn)
            if actor is not None:
                self._audit(conn, actor, "rollback", sorted(going + coming),
                            {"to": to_time, "retired": going, "reactivated": coming})
        return {"retired": retired, "reactivated": revived}

    # --- reads -----------------------------------------------------------------------
    def generation(self) -> int:
        """A counter that grows with every write (indexes compare it to know they are current)."""
        return int(self._conn().execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    def uuid(self) -> str:
        """A random id made when the store file was created (caches beside it check it)."""
        return self._conn().execute("SELECT value FROM meta WHERE key = 'uuid'").fetchone()[0]

    def get(self, edit_id: int) -> MemoryEdit | None:
        row = self._conn().execute(f"SELECT {_COLS} FROM edits WHERE id = ?", (int(edit_id),)).fetchone()
        return _row_to_edit(row) if row else None

    def get_many(self, ids: Sequence[int]) -> dict[int, MemoryEdit]:
        out: dict[int, MemoryEdit] = {}
        conn = self._conn()
        for chunk in _chunks([int(i) for i in ids], 500):
            q = ",".join("?" * len(chunk))
            for row in conn.execute(f"SELECT {_COLS} FROM edits WHERE id IN ({q})", chunk):
                e = _row_to_edit(row)
                out[e.id] = e
        return out

    def list(self, *, active: bool | None = True, batch: str | None = None, lang: str | None = None,
             limit: int | None = None) -> list[MemoryEdit]:
        """Edits in id order; ``active=None`` lists retired ones too."""
        return list(self.iter(active=active, batch=batch, lang=lang, limit=limit))

    def iter(self, *, active: bool | None = True, batch: str | None = None, lang: str | None = None,
             limit: int | None = None) -> Iterator[MemoryEdit]:
        where, args = [], []
        if active is not None:
            where.append("active = ?")
            args.append(int(active))
        if batch is not None:
            where.append("batch = ?")
            args.append(batch)
        if lang is not None:
            where.append("lang = ?")
            args.append(lang)
        sql = f"SELECT {_COLS} FROM edits" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        for row in self._conn().execute(sql, args).fetchall():
            yield _row_to_edit(row)

    def audit_log(self, *, since: float | None = None, actor: str | None = None,
                  limit: int | None = None) -> list[AuditEntry]:
        """Recorded changes in time order (optionally from ``since``, by ``actor``, the last ``limit``)."""
        conds = {"time >= ?": None if since is None else float(since), "actor = ?": actor}
        where = [c for c, v in conds.items() if v is not None]
        args = [v for v in conds.values() if v is not None]
        sql = ("SELECT id, time, actor, action, edit_ids, detail FROM audit"
               + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY id DESC")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self._conn().execute(sql, args).fetchall()
        return [AuditEntry(id=r[0], time=r[1], actor=r[2], action=r[3], edit_ids=json.loads(r[4]),
                           detail=json.loads(r[5]) if r[5] else {}) for r in reversed(rows)]

    def active_ids(self) -> list[int]:
        return [r[0] for r in self._conn().execute("SELECT id FROM edits WHERE active = 1 ORDER BY id")]

    def count(self, *, active: bool | None = True) -> int:
        if active is None:
            return self._conn().execute("SELECT COUNT(*) FROM edits").fetchone()[0]
        return self._conn().execute("SELECT COUNT(*) FROM edits WHERE active = ?", (int(active),)).fetchone()[0]

    def __len__(self) -> int:
        return self.count(active=True)

    # --- JSONL -----------------------------------------------------------------------
    def export_jsonl(self, path: str | Path, *, active: bool | None = None) -> int:
        """Write edits as JSON lines (all of them by default); returns how many."""
        p = Path(path)
        n = 0
        tmp = p.with_name(p.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for e in self.iter(active=active):
                f.write(json.dumps(e.to_dict(), ensure_ascii=False) + "\n")
                n += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
        return n

    def import_jsonl(self, path: str | Path, *, batch: str | None = None, keep_ids: bool = False) -> ImportResult:
        """Add the edits of a JSONL file (new ids unless ``keep_ids``).

        A malformed line (bad JSON, missing or mistyped field) is rejected and
        reported as ``(line number, message)``; the valid lines are kept.
        """
        p = Path(path)
        try:
            fh = open(p, encoding="utf-8")
        except OSError as e:
            raise DataError(f"cannot read {p}: {e}") from e
        edits: list[MemoryEdit] = []
        errors: list[tuple[int, str]] = []
        with fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    edits.append(edit_from_dict(json.loads(line), keep_id=keep_ids, batch=batch))
                except json.JSONDecodeError as e:
                    errors.append((lineno, f"invalid JSON: {e.msg} (column {e.colno})"))
                except (DataError, TypeError, ValueError) as e:
                    errors.append((lineno, str(e)))
        added = self._insert_with_ids(edits) if keep_ids else self.add_many(edits)
        return ImportResult(added=added, errors=errors)

    def _insert_with_ids(self, edits: list[MemoryEdit]) -> list[int]:
        conn = self._conn()
        ids = []
        with self._write(conn):
            for e in edits:
                cols = ("id",) + _FIELDS
                vals = (e.id, e.lang, e.prompt, e.target_new, e.subject or "", e.target_old, e.case_id,
                        float(e.created), int(e.active), e.retired, e.batch)
                cur = conn.execute(f"INSERT OR REPLACE INTO edits ({', '.join(cols)}) VALUES "
                                   f"({','.join('?' * len(cols))})", vals)
                ids.append(cur.lastrowid)
            self._bump(conn)
        return ids


def edit_from_dict(d: Any, *, keep_id: bool = False, batch: str | None = None) -> MemoryEdit:
    """A :class:`MemoryEdit` from a JSON object; :class:`DataError` naming the bad field."""
    if not isinstance(d, dict):
        raise DataError(f"expected a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - set(_FIELDS) - {"id"})
    if unknown:
        raise DataError(f"unknown field(s) {unknown}; valid: {['id', *_FIELDS]}")
    for key in ("lang", "prompt", "target_new"):
        if key not in d:
            raise DataError("missing required field", field=key)
    for key in ("lang", "prompt", "target_new", "subject", "target_old", "case_id", "batch"):
        if key in d and d[key] is not None and not isinstance(d[key], str):
            raise DataError(f"expected a string, got {type(d[key]).__name__}", field=key)
    for key in ("created", "retired"):
        if key in d and d[key] is not None and (isinstance(d[key], bool) or not isinstance(d[key], (int, float))):
            raise DataError(f"expected a number (Unix time), got {d[key]!r}", field=key)
    if "active" in d and not isinstance(d["active"], bool):
        raise DataError(f"expected true/false, got {d['active']!r}", field="active")
    if keep_id and not isinstance(d.get("id"), int):
        raise DataError("expected an integer id (keep_ids)", field="id")
    e = MemoryEdit(lang=d["lang"], prompt=d["prompt"], target_new=d["target_new"], subject=d.get("subject") or "",
                   target_old=d.get("target_old"), case_id=d.get("case_id"),
                   created=float(d["created"]) if d.get("created") is not None else time.time(),
                   active=d.get("active", True), retired=d.get("retired"), batch=batch or d.get("batch"),
                   id=d.get("id") if keep_id else None)
    _validate(e)
    return e


def _validate(e: MemoryEdit) -> None:
    from ..data.languages import normalize_lang

    if not e.prompt or not e.prompt.strip():
        raise DataError("empty prompt", field="prompt")
    if not e.target_new or not e.target_new.strip():
        raise DataError("empty target_new", field="target_new")
    try:
        e.lang = normalize_lang(e.lang)
    except XkeError as err:
        raise DataError(str(err), field="lang") from err


def _chunks(xs: list, n: int) -> Iterator[list]:
    for i in range(0, len(xs), n):
        yield xs[i:i + n]
