"""Thread settings, explicit: one pool for the numeric work of a process.

torch's pool (OpenMP) and numpy's BLAS pool each start one thread per core by default. In one
process they take turns, but each pool's threads spin-wait for a while after its call, so on a
machine with few cores every switch between them costs: measured on 2 cores, one BLAS thread
made the reference simulator 2.4 to 2.8 times faster and the range proof 20 times faster.
`set_threads(n)` gives torch's pool n threads (the fast simulator, fine-tuning and the heavy
kernels run there) and numpy's BLAS one (threadpoolctl, where installed), so only one pool
runs wide. Environment variables (OMP_NUM_THREADS...) are never read here: callers pass n.

It also keeps freed memory for reuse (`keep_freed_memory`): the fast simulator allocates and
frees tensors of megabytes at every node, and glibc's allocator hands such blocks back to the
kernel and page-faults them in again at the next allocation (measured: a sixth of the
ResNet-shaped net's simulation time on this machine). Between the stages of a long job that
heap goes back (`release_freed_memory`), so one stage's leftovers do not add to the next
one's peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import torch

from spikeport.errors import BadInput


def default_threads() -> int:
    """The threads `set_threads` uses when told nothing: one per core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def set_threads(n: int | None = None, blas: int = 1) -> dict[str, int]:
    """torch's pool gets n threads (default_threads() when None), numpy's BLAS `blas` (when
    threadpoolctl is installed; otherwise BLAS keeps its own setting). Returns what was set."""
    n = default_threads() if n is None else n
    if n < 1 or blas < 1:
        raise BadInput(f"threads must be at least 1, got {n} (torch) and {blas} (BLAS)")
    torch.set_num_threads(n)
    keep_freed_memory()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return {"torch": n}
    threadpool_limits(limits=blas, user_api="blas")
    return {"torch": n, "blas": blas}


# glibc's mallopt parameters (malloc.h); 32 MiB is the largest mmap threshold it accepts on
# 64-bit machines (a larger block is always mapped afresh)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD, TRIM_THRESHOLD = 32 << 20, 1 << 30


def keep_freed_memory() -> bool:
    """glibc (Linux): blocks up to 32 MiB come from the heap, and up to 1 GiB of freed heap
    stays mapped, so a tensor freed at one node is reused at the next without page faults.
    A held block may not fit a later request, so a peak can grow a little (the encoder's
    `convert --no-t-aware`: 881 -> 921 MiB). Elsewhere, nothing (returns False)."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def release_freed_memory() -> bool:
    """glibc (Linux): hand the freed heap that keep_freed_memory keeps back to the kernel
    (malloc_trim), at the end of a stage whose blocks the next one would not reuse. The 22M-
    parameter encoder's import leaves 225 MiB of it and its calibration 180, held through
    the T-aware search, whose tensors are larger than the heap's blocks (MMAP_THRESHOLD) and
    so mapped anew. Returns whether any went back (elsewhere, nothing: False)."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))


def _glibc() -> ctypes.CDLL | None:
    """The C library where it is glibc (it has mallopt and malloc_trim), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 (musl has neither)
    except (OSError, AttributeError):
        return None
    return libc
