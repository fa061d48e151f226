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
- Every field is validated on the way in (times finite and within years
  1970-9999, text valid UTF-8 without NUL); a damaged, missing or read-only
  file and every SQLite failure become one-line :class:`XkeError` messages.
  ``create=False`` (read commands) never creates a file; ``readonly=True``
  opens it read-only.
- ``generation()`` grows with every write; indexes use it to know they are
  up to date.
- Audit: ``add_many`` / ``retire`` / ``rollback`` take ``actor=`` (who); when
  given, an ``audit`` row (time, actor, action, edit ids, detail) is written
  in the same transaction as the change; ``audit_log()`` reads them. Files
  made before the audit table get it when opened.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sqlite3
import stat
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from ..data.schema import EditRequest
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
    def from_request(cls, req: EditRequest, *, batch: str | None = None) -> "MemoryEdit":
        """The stored form of an :class:`xke.data.schema.EditRequest`."""
        return cls(lang=req.lang, prompt=req.prompt, target_new=req.target_new, subject=req.subject or "",
                   target_old=req.target_old, case_id=req.case_id, batch=batch)

    def to_request(self) -> EditRequest:
        """This stored edit as an :class:`xke.data.schema.EditRequest` (what methods and prompts read);
        an edit stored without a case id gets ``case_id=""``."""
        return EditRequest(case_id=self.case_id or "", lang=self.lang, prompt=self.prompt,
                           target_new=self.target_new, subject=self.subject, target_old=self.target_old)


def _row_to_edit(row: sqlite3.Row | tuple) -> MemoryEdit:
    (id_, lang, prompt, target_new, subject, target_old, case_id, created, active, retired, batch) = row
    return MemoryEdit(id=id_, lang=lang, prompt=prompt, target_new=target_new, subject=subject,
                      target_old=target_old, case_id=case_id, created=created, active=bool(active),
                      retired=retired, batch=batch)


_COLS = "id, lang, prompt, target_new, subject, target_old, case_id, created, active, retired, batch"

#: the latest Unix time xke accepts (9999-12-31T23:59:59 UTC; later times cannot be printed as dates)
MAX_TIME = 253402300799.0
SQLITE_MAGIC = b"SQLite format 3\x00"


def check_time(value: Any, what: str) -> float:
    """``value`` as a Unix time: a finite number between 0 (1970) and :data:`MAX_TIME` (year 9999),
    else :class:`DataError` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"expected a number (Unix time), got {value!r:.60}", field=what)
    t = float(value)
    if not math.isfinite(t) or not 0 <= t <= MAX_TIME:
        raise DataError(f"{value!r:.60} is not a Unix time between 0 (1970) and {MAX_TIME:.0f} (year 9999)",
                        field=what)
    return t


def _sql_errors(fn):
    """Turn an SQLite failure inside an :class:`EditStore` method into one :class:`XkeError` line."""
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except sqlite3.Error as e:
            raise self._error(e) from None
    return wrapper


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

    ``path=None`` makes a private temporary file, deleted by :meth:`close`. ``create=False`` refuses a
    missing file instead of creating it; ``readonly=True`` opens an existing file read-only (writes
    fail); ``verify=True`` runs SQLite's ``quick_check`` on open so a damaged file is refused before use.
    """

    def __init__(self, path: str | Path | None = None, *, durable: bool = False, timeout: float = 60.0,
                 create: bool = True, readonly: bool = False, verify: bool = False):
        self._tmpdir = None
        if path is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="xke-memory-")
            path = Path(self._tmpdir.name) / "memory.sqlite"
        self.path = Path(path).expanduser()
        self.readonly = readonly
        self._check_file(create=create and not readonly)
        self.durable = durable
        self.timeout = timeout
        self._local = threading.local()
        self._pid = os.getpid()
        self._all_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            conn = self._conn()
            if not readonly:
                self._init_schema(conn)
            self._check_schema(conn, verify)
        except sqlite3.Error as e:
            self.close()
            raise self._error(e) from None
        except XkeError:
            self.close()
            raise

    def _check_file(self, *, create: bool) -> None:
        p = self.path
        if p.is_dir():
            raise XkeError(f"edit memory {p} is a directory; give a file path (e.g. memory.sqlite)")
        if not p.exists():
            if not create:
                raise XkeError(f"edit memory {p} does not exist (check the path; only writing commands "
                               "create a memory)")
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise XkeError(f"edit memory {p}: cannot create its folder ({e.strerror or e})") from None
            return
        if not stat.S_ISREG(p.stat().st_mode):
            raise XkeError(f"edit memory {p} is not a regular file")
        try:
            with open(p, "rb") as fh:
                head = fh.read(len(SQLITE_MAGIC))
        except OSError as e:
            raise XkeError(f"edit memory {p}: cannot read ({e.strerror or e})") from None
        if head and head != SQLITE_MAGIC:
            raise XkeError(f"{p} is not an xke edit memory (not an SQLite file)")
        if not head and not create:
            raise XkeError(f"{p} is an empty file, not an xke edit memory")

    def _check_schema(self, conn: sqlite3.Connection, verify: bool) -> None:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"edits", "meta"} <= tables:
            raise XkeError(f"{self.path} is an SQLite file but not an xke edit memory (tables {sorted(tables)})")
        cols = {r[1] for r in conn.execute("PRAGMA table_info(edits)")}
        missing = sorted(set(_FIELDS) - cols)
        if missing:
            raise XkeError(f"{self.path} is not an xke edit memory: table 'edits' lacks columns {missing}")
        if verify:
            bad = [r[0] for r in conn.execute("PRAGMA quick_check")]
            if bad != ["ok"]:
                raise XkeError(f"edit memory {self.path} is damaged ({'; '.join(map(str, bad[:3]))}); "
                               "restore it from an export (xke memory export) or a backup")

    def _error(self, e: sqlite3.Error) -> XkeError:
        msg = str(e)
        low = msg.lower()
        if "readonly" in low or "read-only" in low:
            hint = "the file or its folder is read-only (xke needs to write the file and its -wal/-shm beside it)"
        elif "malformed" in low or "not a database" in low or "corrupt" in low:
            hint = "the file is damaged; restore it from an export (xke memory export) or a backup"
        elif "locked" in low or "busy" in low:
            hint = "another process holds it locked for too long; retry"
        elif "unable to open" in low:
            hint = "cannot open the file (missing folder, or no permission)"
        else:
            hint = "SQLite error"
        return XkeError(f"edit memory {self.path}: {hint} ({msg})")

    # --- connections -------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if os.getpid() != self._pid:  # forked: never reuse the parent's connections
            self._local = threading.local()
            self._pid = os.getpid()
            self._all_conns = []
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.readonly:
                conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=self.timeout,
                                       isolation_level=None, check_same_thread=False)
            else:
                conn = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None,
                                       check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            if not self.readonly:
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

    @_sql_errors
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

    @_sql_errors
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

    @_sql_errors
    def delete_batch(self, batch: str) -> int:
        """Remove for good every edit of ``batch`` (a killed run's leftovers); returns how many."""
        conn = self._conn()
        with self._write(conn):
            n = conn.execute("DELETE FROM edits WHERE batch = ?", (batch,)).rowcount
            if n:
                self._bump(conn)
        return n

    @_sql_errors
    def content_hash(self, *, exclude_prefix: str | None = None) -> str:
        """SHA-256 of every stored edit (all fields but the id, in id order), leaving out the batches whose
        id starts with ``exclude_prefix`` (runs' transient edits): what a run read from this memory,
        recorded so a resumed run can tell the memory changed."""
        import hashlib

        h = hashlib.sha256()
        where = " WHERE batch IS NULL OR substr(batch, 1, ?) != ?" if exclude_prefix else ""
        args = (len(exclude_prefix), exclude_prefix) if exclude_prefix else ()
        for row in self._conn().execute(f"SELECT {_COLS} FROM edits{where} ORDER BY id", args):
            h.update(json.dumps(list(row[1:]), ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n")
        return h.hexdigest()

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

    @_sql_errors
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

    @_sql_errors
    def rollback(self, to_time: float, *, actor: str | None = None) -> dict[str, int]:
        """Make the active set what it was at ``to_time`` (Unix seconds).

        Edits created after ``to_time`` are retired; edits created at or before it
        and retired after it become active again. Nothing is deleted. ``to_time``
        is checked (finite, 1970-9999) before anything changes.
        """
        try:
            to_time = check_time(to_time, "to")
        except DataError as e:
            raise XkeError(f"rollback: {e}") from None
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
    @_sql_errors
    def generation(self) -> int:
        """A counter that grows with every write (indexes compare it to know they are current)."""
        return int(self._conn().execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    @_sql_errors
    def uuid(self) -> str:
        """A random id made when the store file was created (caches beside it check it)."""
        return self._conn().execute("SELECT value FROM meta WHERE key = 'uuid'").fetchone()[0]

    @_sql_errors
    def get(self, edit_id: int) -> MemoryEdit | None:
        row = self._conn().execute(f"SELECT {_COLS} FROM edits WHERE id = ?", (int(edit_id),)).fetchone()
        return _row_to_edit(row) if row else None

    @_sql_errors
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
        if lang is not None:
            from ..data.languages import normalize_lang
            lang = normalize_lang(lang)
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
        try:
            rows = self._conn().execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise self._error(e) from None
        for row in rows:
            yield _row_to_edit(row)

    @_sql_errors
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

    @_sql_errors
    def active_ids(self) -> list[int]:
        return [r[0] for r in self._conn().execute("SELECT id FROM edits WHERE active = 1 ORDER BY id")]

    @_sql_errors
    def count(self, *, active: bool | None = True) -> int:
        if active is None:
            return self._conn().execute("SELECT COUNT(*) FROM edits").fetchone()[0]
        return self._conn().execute("SELECT COUNT(*) FROM edits WHERE active = ?", (int(active),)).fetchone()[0]

    def __len__(self) -> int:
        return self.count(active=True)

    # --- JSONL -----------------------------------------------------------------------
    def export_jsonl(self, path: str | Path, *, active: bool | None = None) -> int:
        """Write edits as JSON lines (all of them by default); returns how many.

        Refuses (before writing anything) an output that is this memory or one of its ``-wal``/``-shm``
        files, a folder, or an existing file that is not JSONL; writes a temporary file, then renames it.
        """
        from ..fsutil import check_out_file

        p = check_out_file(path)
        self._check_export_target(p)
        n = 0
        fd, tmp_name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        tmp = Path(tmp_name)
        try:
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes it private; an export is an ordinary file
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for e in self.iter(active=active):
                    f.write(json.dumps(e.to_dict(), ensure_ascii=False) + "\n")
                    n += 1
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, p)
        finally:
            if tmp.exists():
                tmp.unlink()
        return n

    def _check_export_target(self, p: Path) -> None:
        mine = [Path(str(self.path) + sfx) for sfx in ("", "-wal", "-shm", "-journal")]
        for m in mine:
            if p.resolve() == m.resolve() or (p.exists() and m.exists() and os.path.samefile(p, m)):
                raise XkeError(f"--out {p} is the edit memory itself ({m.name}); exporting there would destroy "
                               "it. Give another file, e.g. memory.jsonl")
        if not p.exists() or p.stat().st_size == 0:
            return
        with open(p, "rb") as fh:
            head = fh.read(4096)
        if head.startswith(SQLITE_MAGIC):
            raise XkeError(f"--out {p} is an SQLite file (perhaps another edit memory); refusing to overwrite it")
        first = head.split(b"\n", 1)[0].strip()
        try:
            ok = isinstance(json.loads(first.decode("utf-8")), dict) if first else True
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            ok = False
        if not ok:
            raise XkeError(f"--out {p} exists and is not a JSONL file; refusing to overwrite it (remove it first "
                           "or give another path)")

    def import_jsonl(self, path: str | Path, *, batch: str | None = None, keep_ids: bool = False) -> ImportResult:
        """Add the edits of a JSONL file (new ids unless ``keep_ids``).

        A malformed line (bad JSON, missing or mistyped field) is rejected and
        reported as ``(line number, message)``; the valid lines are kept.
        """
        p = Path(path).expanduser()
        if p.is_dir():
            raise DataError("is a folder; give a JSONL file", path=str(p))
        if p.exists() and not stat.S_ISREG(p.stat().st_mode):
            raise DataError("not a regular file (a FIFO or device is not read)", path=str(p))
        try:
            raw = p.read_bytes()
        except OSError as e:
            raise DataError(f"cannot read: {e.strerror or e}", path=str(p)) from None
        edits: list[MemoryEdit] = []
        errors: list[tuple[int, str]] = []
        for lineno, bline in enumerate(raw.split(b"\n"), 1):
            try:
                line = bline.decode("utf-8")
            except UnicodeDecodeError as e:
                errors.append((lineno, f"not UTF-8 text ({e.reason} at byte {e.start})"))
                continue
            if not line.strip():
                continue
            try:
                edits.append(edit_from_dict(_strict_json(line), keep_id=keep_ids, batch=batch))
            except json.JSONDecodeError as e:
                errors.append((lineno, f"invalid JSON: {e.msg} (column {e.colno})"))
            except RecursionError:
                errors.append((lineno, "invalid JSON: nested too deeply"))
            except (DataError, TypeError, ValueError) as e:
                errors.append((lineno, str(e)))
        added = self._insert_with_ids(edits) if keep_ids else self.add_many(edits)
        return ImportResult(added=added, errors=errors)

    @_sql_errors
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
        if key in d and d[key] is not None:
            check_time(d[key], key)
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


def _strict_json(line: str) -> Any:
    """``json.loads`` that refuses NaN/Infinity (not JSON) instead of reading them as floats."""
    def bad_constant(name: str):
        raise ValueError(f"{name} is not a JSON number")
    return json.loads(line, parse_constant=bad_constant)


def _validate(e: MemoryEdit) -> None:
    """Check every field of an edit before it is stored (text, language, times); :class:`DataError`."""
    from ..data.languages import normalize_lang
    from ..data.schema import is_blank, text_problem

    for key in ("lang", "prompt", "target_new", "subject", "target_old", "case_id", "batch"):
        v = getattr(e, key)
        if v is None:
            continue
        if not isinstance(v, str):
            raise DataError(f"expected a string, got {type(v).__name__}", field=key)
        why = text_problem(v)
        if why:
            raise DataError(why, field=key)
    if not e.prompt or is_blank(e.prompt):
        raise DataError("empty prompt", field="prompt")
    if not e.target_new or is_blank(e.target_new):
        raise DataError("empty target_new", field="target_new")
    e.created = check_time(e.created, "created")
    if e.retired is not None:
        e.retired = check_time(e.retired, "retired")
    try:
        e.lang = normalize_lang(e.lang)
    except XkeError as err:
        raise DataError(str(err), field="lang") from err


def _chunks(xs: list, n: int) -> Iterator[list]:
    for i in range(0, len(xs), n):
        yield xs[i:i + n]
