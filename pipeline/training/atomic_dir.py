"""Write a directory as a whole: every file goes into a temp sibling, which then takes the
target's place in one rename. A reader, a killed run or a full disk leaves the old complete
directory or the new one, never a mix of the two. (A killed run may leave its hidden temp
sibling, `.NAME.*.tmp`, behind; it is safe to delete.)"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from pipeline.errors import PipelineError

RENAME_EXCHANGE = 2  # linux/fs.h: swap two paths atomically
AT_FDCWD = -100


def write_dir(target: str | Path, files: dict[str, Callable[[Path], None]],
              replaceable: set[str]) -> None:
    """Create or replace directory `target` with `files`: name -> writer(path) called on a
    path inside the temp sibling. An existing target is replaced only when every entry in it
    is one of `replaceable` (the names such a directory holds), so a mistyped target never
    loses other files."""
    target = Path(target)
    if target.exists():
        foreign = sorted(p.name for p in target.iterdir() if p.name not in replaceable) \
            if target.is_dir() else [target.name]
        if foreign:
            raise PipelineError(f"{target} holds other files ({', '.join(foreign[:3])}); give "
                                f"an empty or new directory, or the one an earlier run wrote")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        for name, write in files.items():
            write(tmp / name)
        _swap(tmp, target)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if _disk_full(err):
            raise PipelineError(f"disk full while writing {target}; it is unchanged: free space "
                                f"on {target.parent} and run the command again") from None
        if isinstance(err, OSError):
            raise PipelineError(f"cannot write {target} ({err.strerror or err}); it is "
                                f"unchanged") from None
        raise


def _disk_full(err: BaseException) -> bool:
    # writers in other languages (safetensors, HDF5) report it without an errno
    return getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or any(
        text in str(err) for text in ("No space left", "StorageFull"))


def _swap(new: Path, target: Path) -> None:
    """Put directory `new` at `target`, deleting what was there (past the swap nothing may
    fail: a leftover old copy is only wasted space)."""
    if not target.exists():
        os.rename(new, target)
        return
    if _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # after the exchange it holds the old directory
        return
    # no atomic exchange here: between these two renames only the old directory exists,
    # under its temp name
    old = new.with_name(new.name + ".old")
    os.rename(target, old)
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2); False where that is not available."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    return renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0
