"""Exceptions for problems in the user's input. The CLI prints them as one line, no traceback.

Also the two helpers every one-line message uses: ``clip`` (an input echoed in a message is cut
to a readable length, whatever the input was) and ``os_reason`` (an OSError in a few words).
"""

from __future__ import annotations

import errno
from pathlib import Path

#: the most characters of any one input a message echoes
ECHO_LIMIT = 200


class Lenet5Error(Exception):
    """Base class: a clear, one-line message about a file or an argument."""


class DataError(Lenet5Error):
    """A dataset file is missing, unreadable or not valid IDX data."""


class CheckpointError(Lenet5Error):
    """A checkpoint file is missing, unreadable, or does not fit the model."""


class RunFileError(Lenet5Error):
    """A file of a run directory (config.json, metrics.jsonl, ...) is unreadable or malformed."""


def clip(value: object, limit: int = ECHO_LIMIT) -> str:
    """``str(value)`` on one line and at most ``limit`` characters (the middle is cut: the start
    says what it was, the end often which file)."""
    text = " ".join(str(value).split("\n"))
    if len(text) <= limit:
        return text
    head = (limit - 5) * 2 // 3
    return f"{text[:head]} ... {text[len(text) - (limit - 5 - head):]}"


def clip_repr(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: how a message shows a hostile value."""
    return clip(repr(value), limit)


_REASONS = {errno.ENOSPC: "no space left on device", errno.EACCES: "permission denied",
            errno.EROFS: "read-only file system", errno.ENOTDIR: "a parent is not a directory",
            errno.ELOOP: "symlink loop", errno.EPERM: "operation not permitted",
            errno.ENAMETOOLONG: "file name too long (the limit is 255 bytes per name)",
            errno.EISDIR: "is a directory", errno.ENOENT: "no such file or directory",
            errno.EEXIST: "already exists", errno.EXDEV: "on another file system"}


def os_reason(e: OSError) -> str:
    """What an OSError says, in a few words."""
    return _REASONS.get(e.errno, e.strerror or str(e)) if e.errno is not None else str(e)


def os_error(path: str | Path | None, e: OSError) -> Lenet5Error:
    """A one-line error for a file-system failure, naming the (clipped) path and what went wrong."""
    where = path if path is not None else e.filename
    return Lenet5Error(f"{clip(where)}: {os_reason(e)}" if where is not None else os_reason(e))
