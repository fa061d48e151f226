"""User-facing errors.

Every problem caused by the user's input (a broken data file, an unknown
language, a missing model directory...) is raised as :class:`XkeError` with a
message that names the file, record and field. The CLI prints the message and
exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations


class XkeError(Exception):
    """An error in the user's input or configuration, with a readable message."""


class DataError(XkeError):
    """A benchmark or edit file is malformed.

    ``path``, ``row`` (0-based record index or 1-based line number, as the
    message says) and ``field`` locate the problem.
    """

    def __init__(self, message: str, *, path: str | None = None, row: int | str | None = None,
                 field: str | None = None):
        where = []
        if path is not None:
            where.append(f"{path}")
        if row is not None:
            where.append(f"record {row}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.path, self.row, self.field = path, row, field


class ConfigError(XkeError):
    """A config file or option is invalid."""


class ModelError(XkeError):
    """A model cannot be loaded or lacks something a method needs."""
