"""The cache lock: one writer of a cache's files at a time, across processes and threads."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import time
from pathlib import Path

from pipeline.store.files import check_out_dir
from pipeline.store.layout import LOCK, CacheError

POLL = 0.05  # seconds between tries while waiting for the lock


class CacheLock:
    """An exclusive flock on <cache>/.lock while one process writes the cache.

    `wait` seconds > 0 retries until the holder lets go (label writers); 0 fails at once
    (embed). The kernel drops the lock when its holder exits, SIGKILL included, so the file
    left behind never blocks the next run; it only names the last holder. The lock file is
    opened without following a symlink, so the lock never writes outside the cache.
    """

    def __init__(self, cache_dir: str | Path, wait: float = 0.0):
        self.path = check_out_dir(cache_dir) / LOCK
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = _open_lock_file(self.path)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(self._fd, 200, 0).decode("utf-8", "replace").strip()
                    self.release()
                    waited = f" (waited {wait:g} s)" if wait > 0 else ""
                    raise CacheError(f"{cache_dir} is being written by "
                                     f"{holder or 'another process'}{waited}; wait for it to "
                                     f"finish or use another --out") from None
                time.sleep(POLL)
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)

    def release(self) -> None:
        """Let go of the lock (closing the file drops the flock); safe to call twice."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "CacheLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _open_lock_file(path: Path) -> int:
    """The lock file's descriptor; a symlink or anything but a regular file is refused."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o666)  # the umask applies, as for any new file
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise CacheError(f"{path} is a symbolic link; remove it, a cache lock must be a "
                             f"plain file") from None
        raise CacheError(f"{path}: cannot open the lock file ({err.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CacheError(f"{path} is not a plain file; remove it")
    return fd
