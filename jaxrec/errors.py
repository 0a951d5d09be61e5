"""User-facing errors.

Everything a user can get wrong (a malformed file, an unknown format, a bad option) raises
a subclass of :class:`UserError`. The CLI prints its message and exits with status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input: print the message, never a traceback."""


class DataError(UserError, ValueError):
    """A data file or data option is malformed, empty, or of the wrong format."""


def bad_line(path, lineno: int, line: str | bytes, why: str) -> DataError:
    """The error for one malformed line: names the file, the 1-based line number and the content."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    line = line.rstrip("\r\n")
    if len(line) > 200:
        line = line[:200] + "..."
    return DataError(f"{path}:{lineno}: {why}: {line!r}")
