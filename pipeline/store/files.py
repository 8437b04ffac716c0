"""Whole-file writes that readers never see half done, and JSON reads that fail in one line.

Every file is written to a temp file beside its target (``.<name>.<random>.tmp``, created by
mkstemp, so never through a symlink), synced to disk, given the mode the umask allows, and
renamed over the target. A failure removes the temp file and raises a one-line CacheError.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import mmap
import os
import stat
import tempfile
from pathlib import Path

import h5py

from pipeline import errors
from pipeline.store.layout import CacheError


def current_umask() -> int:
    """The process's umask, read without changing it (Linux); elsewhere set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)  # no way to read it without setting it outside Linux
    os.umask(old)
    return old


def file_mode() -> int:
    """The mode open() would give a new file: 0o666 less the umask."""
    return 0o666 & ~current_umask()


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes, hashed through a memory map (no copy of its pages)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return hashlib.sha256().hexdigest()
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return hashlib.sha256(mapped).hexdigest()


def is_disk_full(err: OSError) -> bool:
    return errors.is_disk_full(err)


def write_error(path: Path, err: BaseException) -> CacheError:
    """A failed write as one line naming the file (pipeline.errors.write_failure: a full disk,
    a quota, a file size limit, a read-only file system, or the reason given)."""
    return CacheError(str(errors.write_failure(path, err)))


def check_out_dir(path: str | Path) -> Path:
    """`path` as a directory to write into: an existing file there is a one-line error."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CacheError(f"{path} is a file, not a directory; give --out a new directory or "
                         f"one an earlier run wrote")
    return path


def atomic_write(path: str | Path, write) -> None:
    """Call `write(tmp_path)`, then sync the temp file and rename it over `path`.

    On any failure the temp file is removed and `path` is left as it was; an OSError (a full
    disk, a failed sync), or another library's error that reports a failed write (HDF5 and
    safetensors raise RuntimeError and their own types), becomes a one-line CacheError.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise write_error(path, err) from None
    os.close(fd)
    try:
        write(tmp)
        seal_file(tmp)
        os.replace(tmp, path)
    except Exception as err:
        _discard(tmp)
        if isinstance(err, OSError) or errors.write_failure_kind(err) is not None:
            raise write_error(path, err) from None
        raise
    except BaseException:
        _discard(tmp)
        raise
    sync_directory(path.parent)


def _create_h5(path: str) -> h5py.File:
    """A new HDF5 file whose writes fail where they are made: without HDF5's sieve buffer the
    values of a dataset go to disk when it is created, so a full disk or a file size limit
    raises there (and at flush or close), never in a dataset's destructor, where Python can
    only print it."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_sieve_buf_size(0)
    fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)
    # no object times (h5py.File's default): equal inputs must give byte-identical files
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    return h5py.File(h5py.h5f.create(os.fsencode(path), h5py.h5f.ACC_TRUNC, fapl=fapl,
                                     fcpl=fcpl))


def atomic_write_h5(path: str | Path, fill) -> None:
    """atomic_write of an HDF5 file: `fill(h5py.File)` adds its contents."""
    def write(tmp):
        f = _create_h5(tmp)
        try:
            fill(f)
            f.flush()  # a failed write raises here; HDF5 may only print one found at close
        except BaseException:
            try:
                f.close()
            except Exception:  # the same failure again: the first one is reported
                pass
            raise
        f.close()
    atomic_write(path, write)


def atomic_write_json(path: str | Path, obj) -> None:
    """atomic_write of `obj` as indented JSON with sorted keys."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
    atomic_write(path, write)


def read_json(path: str | Path, kind: type = dict, hint: str = ""):
    """A JSON file whose top level is a `kind` (dict or list); anything else is a one-line
    CacheError naming the file, ending with `hint` (what to do) when given. The fields are
    the reader's to check: pipeline.store.schema."""
    after = f"; {hint}" if hint else ""
    try:
        with open(path, "rb") as f:
            value = json.loads(f.read())
    except FileNotFoundError:
        raise CacheError(f"{path}: missing{after}") from None
    except OSError as err:
        raise CacheError(f"{path}: unreadable ({err.strerror or err}){after}") from None
    except (ValueError, RecursionError) as err:  # bad UTF-8 or JSON, or absurd nesting
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise CacheError(f"{path}: not valid JSON ({reason}); it is truncated or "
                         f"corrupt{after}") from None
    if not isinstance(value, kind):
        want = "an object" if kind is dict else "an array"
        raise CacheError(f"{path}: expected {want} at the top level, found "
                         f"{type(value).__name__}{after}")
    return value


def remove_temp_files(directory: str | Path) -> int:
    """Delete the temp files atomic_write leaves behind when its process is killed.

    Only entries of `directory` itself are considered; a symlink is removed, never followed,
    and a directory that happens to match the pattern is left alone.
    """
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not fnmatch.fnmatchcase(entry.name, ".*.tmp") or entry.is_dir(follow_symlinks=False):
            continue
        try:
            os.unlink(entry.path)  # unlink removes a symlink itself, not its target
        except FileNotFoundError:
            continue
        removed += 1
    return removed


def seal_file(tmp: str | Path) -> None:
    """Give a finished temp file its final mode (0666 less the umask, whatever mode its
    writer gave it) and force its bytes to disk."""
    fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{tmp} is not a regular file")
        os.fchmod(fd, file_mode())  # mkstemp made it 0600
        os.fsync(fd)  # a write the kernel could not complete is reported here
    finally:
        os.close(fd)


def _discard(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def sync_directory(directory: Path) -> None:
    """Make a rename durable; some file systems cannot sync a directory, which is no error."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise write_error(directory, err) from None
    finally:
        os.close(fd)
