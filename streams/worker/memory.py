"""Hand the heap memory a burst of records freed back to the operating system.

A worker holds no per-key state, but a take of large records (hundreds of charges each, tens of
kilobytes) passes through glibc's heap, and glibc keeps the freed pages: after a backlog the
worker's RSS stays at its peak although the live heap is back near its idle size. `malloc_trim`
returns the free pages (in the middle of the heap too, not only at its top); it walks the heap,
a few milliseconds for a few hundred megabytes, so the worker calls it once per flush interval,
not per record. Where the C library is not glibc (musl, macOS) there is nothing to call and
`release_free_memory` does nothing.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable

# Container objects allocated, net, between two collections of the youngest generation (CPython's
# default is 700). A chunk of charges lives for one flush: tens of thousands of tuples that the
# default scans over and over while they are decoded, settled and written, only to be freed by
# their reference counts a moment later.
YOUNG_COLLECTION_EVERY = 10_000


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_trim = _malloc_trim()


def release_free_memory() -> bool:
    """Return the heap's free pages to the OS; whether the C library could (glibc only)."""
    if _trim is None:
        return False
    _trim(0)
    return True


def settle_heap() -> None:
    """Once the worker's code and libraries are loaded: move what exists now out of the garbage
    collector's sight (it lives as long as the process, and a full collection would scan all of
    it again and again) and collect the young generation less often. The worker's own
    allocations are still collected; a decode-and-flush profile spent about a quarter of its
    settle time in collections without this."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])
