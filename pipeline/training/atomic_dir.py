"""Write a directory as a whole: every file goes into a temp sibling, which then takes the
target's place in one rename. A reader, a killed run or a full disk leaves the old complete
directory or the new one, never a mix of the two.

The temp sibling (`.NAME.<random>.tmp`) is flock'ed by its writer from before it gets that
name until it is gone, so a killed run's sibling is the only one nobody holds: the next write
of the same target removes it.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from pipeline.errors import PipelineError, write_failure, write_failure_kind
from pipeline.store.files import (check_out_dir, current_umask, seal_file,
                                  sync_directory)

RENAME_EXCHANGE = 2  # linux/fs.h: swap two paths atomically
AT_FDCWD = -100


def write_dir(target: str | Path, files: dict[str, Callable[[Path], None]],
              replaceable: set[str]) -> None:
    """Create or replace directory `target` with `files`: name -> writer(path) called on a
    path inside the temp sibling. An existing target is replaced only when every entry in it
    is one of `replaceable` (the names such a directory holds), so a mistyped target never
    loses other files."""
    target = check_target(target, replaceable)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_dirs(target)
        tmp, held = _locked_temp_dir(target)
    except OSError as err:
        raise write_failure(target, err, "it is unchanged") from None
    try:
        for name, write in files.items():
            write(tmp / name)
            seal_file(tmp / name)  # the umask's mode (safetensors makes 0600), and on disk
        sync_directory(tmp)
        _swap(tmp, target)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError) or _failed_write(err):
            raise write_failure(target, err, "it is unchanged") from None
        raise
    finally:
        os.close(held)
    try:  # make the rename durable; the new head is in place whatever this says
        sync_directory(target.parent)
    except PipelineError:
        pass


def check_target(target: str | Path, replaceable: set[str]) -> Path:
    """`target` if write_dir may create or replace it (callers check before any work): not a
    file, and no entry in it other than `replaceable` names."""
    target = check_out_dir(target)
    if target.exists():
        foreign = sorted(p.name for p in target.iterdir() if p.name not in replaceable)
        if foreign:
            raise PipelineError(f"{target} holds other files ({', '.join(foreign[:3])}); give "
                                f"an empty or new directory, or the one an earlier run wrote")
    return target


def _failed_write(err: BaseException) -> bool:
    """A write that failed in a library reporting it as another exception type (safetensors,
    PyTorch) for a reason write_failure knows."""
    return isinstance(err, Exception) and write_failure_kind(err) is not None


def _locked_temp_dir(target: Path) -> tuple[Path, int]:
    """A new empty sibling `.NAME.<random>.tmp` of `target`, flock'ed (the descriptor is
    returned) before it takes that name, so that no one takes it for a killed run's."""
    new = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".new", dir=target.parent))
    try:
        os.chmod(new, 0o777 & ~current_umask())  # mkdtemp makes it 0700; the umask decides
        fd = os.open(new, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        new.rmdir()
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # no flock on this file system: nobody else can take it either
        pass
    tmp = new.with_suffix(".tmp")
    os.rename(new, tmp)
    return tmp, fd


def remove_stale_temp_dirs(target: Path) -> int:
    """Remove the temp siblings of `target` that no live writer holds (a killed run's)."""
    removed = 0
    for path in target.parent.glob(f".{target.name}.*.tmp"):
        if path.is_symlink() or not path.is_dir():
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live writer holds it (or the file system cannot tell)
            os.close(fd)
            continue
        try:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
        finally:
            os.close(fd)
    return removed


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
