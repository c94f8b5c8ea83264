"""Keep glibc's malloc from handing every freed activation back to the kernel.

A training step of an embedding model on CPU allocates and frees many short-lived tensors of
0.1-10 MB: each looked-up batch, each elementwise result, each gradient, and for adversarial
training each PGD step's δ, step and projection. By default glibc serves blocks that large with a
fresh ``mmap`` and ``munmap``s them on free (or trims them off the heap top), so the next
allocation of the same size pays a page fault for every 4 KiB page it touches. For these tensor
sizes the faults cost as much as the arithmetic. PyTorch's CPU performance guide recommends
swapping in jemalloc or tcmalloc for this. We cannot preload a library from inside a running
process, so we set the two glibc knobs that have the same effect for this workload:

- ``M_MMAP_THRESHOLD`` to 32 MiB (glibc's maximum): blocks below it come from the heap, which
  reuses them;
- ``M_TRIM_THRESHOLD`` to 1 GiB: up to that much free memory at the heap top stays mapped.

Freed memory therefore stays in the process (bounded by the step's peak working set), instead of
going back to the OS after every step. `benchmarks/epoch_time.py` measures the effect. Elsewhere
(macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1  # from glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30
DISABLE_ENV = "ADVREC_KEEP_MALLOC"
"""Set this variable to 1 to leave malloc as it is (e.g. when jemalloc is already preloaded)."""


def tune_malloc() -> bool:
    """Set glibc's mmap and trim thresholds for this process; True when they were set."""
    if os.environ.get(DISABLE_ENV) == "1":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc: no mallopt to call
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
