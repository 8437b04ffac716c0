"""The one base class of errors a user can fix: the CLI shows their message, not a traceback.

Also the one place that turns a failed write into such an error (`write_failure`): a full
disk, a quota, a file size limit (ulimit -f) or a read-only file system, however the writing
library reports it (an OSError with an errno; HDF5, safetensors and PyTorch only put the
reason into the message text).
"""

from __future__ import annotations

import errno
from pathlib import Path


class PipelineError(Exception):
    """Bad input, missing files, mismatched caches: the message says what and what to do."""


# errno -> (words found in the messages of libraries that report no errno, what happened, what
# to do); {where} is the directory written to
_WRITE_FAILURES = {
    errno.ENOSPC: (("No space left", "os error 28", "errno = 28", "StorageFull"),
                   "disk full", "free space on {where} and run the command again"),
    errno.EDQUOT: (("Disk quota exceeded", "os error 122", "errno = 122"),
                   "disk quota exceeded", "free space on {where} and run the command again"),
    errno.EFBIG: (("File too large", "os error 27", "errno = 27", "FileTooLarge"),
                  "file size limit reached",
                  "raise the limit (ulimit -f) or write smaller files (embed --shard-tokens) and "
                  "run the command again"),
    errno.EROFS: (("Read-only file system", "os error 30", "errno = 30", "ReadOnlyFilesystem"),
                  "read-only file system", "give an --out on a writable file system"),
}


def write_failure_kind(err: BaseException) -> int | None:
    """ENOSPC, EDQUOT, EFBIG or EROFS when `err` is a write that failed for that reason, from
    its errno or, for libraries that report none, from its message; else None."""
    code = getattr(err, "errno", None)
    if code in _WRITE_FAILURES:
        return code
    text = str(err)
    for code, (words, _, _) in _WRITE_FAILURES.items():
        if any(word in text for word in words):
            return code
    return None


def is_disk_full(err: BaseException) -> bool:
    return write_failure_kind(err) in (errno.ENOSPC, errno.EDQUOT)


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (or its type's name when it has none)."""
    text = str(getattr(err, "strerror", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def write_failure(path: str | Path, err: BaseException,
                  unchanged: str | None = "nothing was changed") -> PipelineError:
    """A failed write of `path` as one line: what happened, what to do, and (`unchanged`)
    what the failure left as it was."""
    path = Path(path)
    kind = write_failure_kind(err)
    after = f"; {unchanged}" if unchanged else ""
    if kind is not None:
        _, what, todo = _WRITE_FAILURES[kind]
        return PipelineError(f"{what} while writing {path}; {todo.format(where=path.parent)}"
                             f"{after}")
    return PipelineError(f"cannot write {path} ({first_line(err)}){after}")


def os_error_message(err: OSError) -> str:
    """Any OSError as one line naming its file; a failed write also says what to do."""
    where = getattr(err, "filename", None)
    if write_failure_kind(err) is not None:
        return str(write_failure(where or "a file", err, unchanged=None))
    return first_line(err) + (f": {where}" if where else "")


def report_file_size_limit() -> None:
    """For entry points (the CLI, the DVC stages) only, as it is process-wide: a write past
    the file size limit (ulimit -f) then fails with EFBIG, which every write turns into a
    one-line error (write_failure), instead of SIGXFSZ killing the process without a word."""
    import signal

    try:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    except (AttributeError, ValueError, OSError):  # no such signal here, or not the main thread
        pass
