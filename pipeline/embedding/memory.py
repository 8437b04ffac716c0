"""Process-wide allocator tuning for long embed runs; for entry points only, never the library."""

from __future__ import annotations

import ctypes


def keep_freed_memory() -> None:
    """Have glibc keep freed memory for reuse instead of handing it back to the system.

    Batches allocate activations of many sizes; pages handed back fault in again one at a
    time on the next batch. This changes the whole process's malloc policy, so only a
    program's entry point (the CLI) should call it. Other C libraries keep their own policy.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_trim_threshold, 2 << 30)
    libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's maximum
