"""File-system safety helpers: output directories checked before work, locks, hashes, atomic swaps.

Every command that writes results uses these so that bad paths fail with one
line *before* any work, two processes never write the same output at once,
and a replaced directory is never left half-written:

- :func:`prepare_out_dir` — create ``--out`` (or check it) and prove it is writable;
- :func:`check_out_file` — the same for an output file (its folder, and that it is not a folder);
- :class:`DirLock` — an exclusive, non-blocking ``flock`` on ``<dir>/.xke.lock``;
- :func:`hash_path` — SHA-256 of a file, or of every file under a folder (names and bytes);
- :func:`replace_dir` — fill a sibling temporary folder, then swap it into place.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Callable

from .errors import XkeError


def prepare_out_dir(path: str | Path, what: str = "--out") -> Path:
    """Create output folder ``path`` (parents too) and check that it is a writable folder; returns it.

    Raises :class:`XkeError` naming ``what`` when ``path`` is a file, cannot be
    created, or cannot be written — before any work is done.
    """
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise XkeError(f"{what} {p} is a file, not a folder; give a folder path")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise XkeError(f"{what} {p}: cannot create the folder ({e.strerror or e})") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".xke-write-test-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise XkeError(f"{what} {p}: folder is not writable ({e.strerror or e})") from None
    return p


def check_out_file(path: str | Path, what: str = "--out") -> Path:
    """Check that output file ``path`` can be written (its folder exists or is created and is
    writable; ``path`` is not a folder or a special file); returns it. Nothing is written to ``path``."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise XkeError(f"{what} {p} is a folder; give a file path")
    if p.exists() and not p.is_file():
        raise XkeError(f"{what} {p} is not a regular file")
    prepare_out_dir(p.parent if str(p.parent) else Path("."), what=f"{what} folder")
    return p


def is_regular_file(path: str | Path) -> bool:
    """True for a regular file (not a FIFO, socket, device or folder); never opens it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


class DirLock:
    """An exclusive lock on folder ``path`` (``<path>/.xke.lock``, ``flock``) held while in use.

    A second holder fails at once with :class:`XkeError` naming ``what`` and the
    holder's pid, instead of both writing the same files. The kernel drops the
    lock when its process dies, so a killed run never leaves a stale lock.
    """

    def __init__(self, path: str | Path, what: str = "another xke process"):
        self.path = Path(path)
        self.what = what
        self._fh = None

    def acquire(self) -> "DirLock":
        import fcntl

        lock = self.path / ".xke.lock"
        fh = open(lock, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise XkeError(f"{self.path} is in use by {self.what} (pid {holder}); wait for it to finish "
                           "or use another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            import fcntl

            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def hash_path(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes, or of a folder: every regular file under it, by sorted relative
    path (name and bytes), hidden files and folders excluded. A missing path hashes to ``"missing"``."""
    p = Path(path).expanduser()
    h = hashlib.sha256()

    def feed(f: Path) -> None:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)

    if p.is_dir():
        files = sorted(f for f in p.rglob("*")
                       if is_regular_file(f) and not any(part.startswith(".") for part in f.relative_to(p).parts))
        for f in files:
            rel = f.relative_to(p).as_posix().encode("utf-8", "surrogateescape")
            h.update(len(rel).to_bytes(8, "little") + rel)
            h.update(f.stat().st_size.to_bytes(8, "little"))
            feed(f)
        return h.hexdigest()
    if is_regular_file(p):
        feed(p)
        return h.hexdigest()
    return "missing"


def replace_dir(dest: str | Path, fill: Callable[[Path], None]) -> Path:
    """Write a folder atomically: ``fill(tmp)`` writes into a fresh sibling folder, which then replaces
    ``dest`` (the old content is moved aside and removed only after the swap). A crash at any point
    leaves either the old ``dest`` or the new one, never a mix; leftovers are hidden ``.name.tmp-*`` /
    ``.name.old-*`` folders that the next call cleans up (first putting back an old ``dest`` that a crash
    left moved aside)."""
    d = Path(dest).expanduser()
    d.parent.mkdir(parents=True, exist_ok=True)
    olds = sorted(d.parent.glob(f".{d.name}.old-*"))
    if olds and not d.exists():
        os.replace(olds.pop(), d)
    for stale in list(d.parent.glob(f".{d.name}.tmp-*")) + olds:
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}.tmp-", dir=d.parent))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes it private; the result is an ordinary folder
    try:
        fill(tmp)
        _fsync_tree(tmp)
        if d.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{d.name}.old-", dir=d.parent))
            os.rmdir(old)
            os.replace(d, old)
            os.replace(tmp, d)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, d)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return d


def _fsync_tree(root: Path) -> None:
    for f in root.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
