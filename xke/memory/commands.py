"""``xke memory add|list|retire|rollback|export|import``."""

from __future__ import annotations

import json
import sys
from datetime import datetime


def register(sub, groups) -> None:
    mem = groups["memory"]

    def with_db(p):
        p.add_argument("--db", required=True, help="edit memory file (SQLite; add and import create it if missing)")
        return p

    p = with_db(mem.add_parser("add", help="store one edit descriptor"))
    p.add_argument("--lang", required=True, help="language of the edit (en, zh, ...)")
    p.add_argument("--prompt", required=True, help="edit prompt (question or cloze statement)")
    p.add_argument("--target-new", required=True, help="new answer")
    p.add_argument("--subject", default="", help="subject of the edit")
    p.add_argument("--target-old", default=None, help="old answer, when known")
    p.add_argument("--case-id", default=None)
    p.add_argument("--batch", default=None, help="batch/stream id")
    p.set_defaults(func=_add)

    p = with_db(mem.add_parser("list", help="list stored edits"))
    p.add_argument("--all", action="store_true", help="include retired edits")
    p.add_argument("--batch", default=None)
    p.add_argument("--lang", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_list)

    p = with_db(mem.add_parser("retire", help="mark edits inactive (kept for the record)"))
    p.add_argument("ids", nargs="*", type=int, help="edit ids")
    p.add_argument("--batch", default=None, help="retire a whole batch/stream")
    p.set_defaults(func=_retire)

    p = with_db(mem.add_parser("rollback", help="make the active edits what they were at a point in time"))
    p.add_argument("--to", required=True,
                   help="Unix seconds or an ISO time (2025-01-31T12:00:00, local time)")
    p.set_defaults(func=_rollback)

    p = with_db(mem.add_parser("export", help="write edits as JSONL"))
    p.add_argument("--out", required=True)
    p.add_argument("--active-only", action="store_true")
    p.set_defaults(func=_export)

    p = with_db(mem.add_parser("import", help="add edits from JSONL (malformed lines are reported and skipped)"))
    p.add_argument("file")
    p.add_argument("--batch", default=None, help="batch id for the imported edits")
    p.set_defaults(func=_import)



def _store(args, *, create: bool = False, readonly: bool = False):
    """The memory of ``--db``, checked on open (``quick_check``); only ``add``/``import`` create a file,
    and read commands open it read-only."""
    from .store import EditStore
    return EditStore(args.db, create=create, readonly=readonly, verify=True)


def _add(args) -> int:
    from .store import MemoryEdit
    with _store(args, create=True) as s:
        i = s.add(MemoryEdit(lang=args.lang, prompt=args.prompt, target_new=args.target_new, subject=args.subject,
                             target_old=args.target_old, case_id=args.case_id, batch=args.batch))
    print(i)
    return 0


def _fmt_time(t: float | None) -> str:
    if not t:
        return "-"
    try:
        return datetime.fromtimestamp(t).isoformat(timespec="seconds")
    except (ValueError, OverflowError, OSError):  # a time no date can show: print the number
        return repr(t)


def _list(args) -> int:
    from ..errors import XkeError
    if args.limit is not None and args.limit < 0:
        raise XkeError(f"--limit must be >= 0, got {args.limit}")
    with _store(args, readonly=True) as s:
        edits = s.list(active=None if args.all else True, batch=args.batch, lang=args.lang, limit=args.limit)
    for e in edits:
        if args.json:
            print(json.dumps(e.to_dict(), ensure_ascii=False))
        else:
            flag = "" if e.active else f"  [retired {_fmt_time(e.retired)}]"
            print(f"{e.id}\t{e.lang}\t{e.prompt}\t-> {e.target_new}\t{_fmt_time(e.created)}"
                  f"{'  batch=' + e.batch if e.batch else ''}{flag}")
    return 0


def _retire(args) -> int:
    from ..errors import XkeError
    if not args.ids and not args.batch:
        raise XkeError("memory retire: give edit ids or --batch")
    with _store(args) as s:
        n = s.retire(args.ids or None, batch=args.batch)
    print(f"retired {n} edit(s)")
    return 0


def _parse_time(text: str) -> float:
    """``--to`` as Unix seconds: a number or an ISO time, finite and between 1970 and 9999."""
    from ..errors import DataError, XkeError
    from .store import check_time
    try:
        t = float(text)
    except ValueError:
        try:
            t = datetime.fromisoformat(text).timestamp()
        except (ValueError, OverflowError, OSError):
            raise XkeError(f"--to {text!r}: give Unix seconds or an ISO time like 2025-01-31T12:00:00") from None
    try:
        return check_time(t, "to")
    except DataError:
        raise XkeError(f"--to {text!r}: not a time between 1970 and 9999 (Unix seconds 0 to 253402300799)") from None


def _rollback(args) -> int:
    t = _parse_time(args.to)  # checked before the memory is touched
    with _store(args) as s:
        r = s.rollback(t)
    print(f"rolled back to {_fmt_time(t)}: {r['retired']} edit(s) retired, {r['reactivated']} reactivated")
    return 0


def _export(args) -> int:
    with _store(args, readonly=True) as s:
        n = s.export_jsonl(args.out, active=True if args.active_only else None)
    print(f"wrote {n} edit(s) to {args.out}")
    return 0


def _import(args) -> int:
    from pathlib import Path

    from ..errors import DataError
    f = Path(args.file).expanduser()
    if not f.exists():
        raise DataError("no such file", path=str(f))
    with _store(args, create=True) as s:
        r = s.import_jsonl(args.file, batch=args.batch)
    for lineno, msg in r.errors:
        print(f"{args.file}: line {lineno}: rejected: {msg}", file=sys.stderr)
    print(f"imported {len(r.added)} edit(s); rejected {len(r.errors)} line(s)")
    return 1 if r.errors else 0
