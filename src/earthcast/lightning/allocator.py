"""CPU allocator setting for training loops: keep freed memory in the process.

glibc serves allocations above its mmap threshold (at most 32 MiB) with fresh mmap'd pages and unmaps them
on free, so every training step of a model with large activations (the Earthformer's 128×128×64 head
tensors are ~50 MiB) page-faults its big tensors in again: ~150k minor faults and 0.2–0.3 s of kernel time
per SEVIR-LR step on one core. Serving everything from the heap and never trimming it makes steady-state
steps fault-free, at the price of keeping the peak footprint resident (as CUDA's caching allocator does).
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Ask glibc to stop returning freed memory to the system. True when it took effect (glibc on Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
