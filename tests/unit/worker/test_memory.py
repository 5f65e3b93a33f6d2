"""`release_free_memory` returns glibc's free heap pages and is a no-op elsewhere."""

from __future__ import annotations

import platform

from streams.worker import memory


def test_release_returns_freed_heap_on_glibc() -> None:
    blocks = [bytes(64 * 1024) for _ in range(256)]  # 16 MiB in the heap, below the mmap threshold
    del blocks
    released = memory.release_free_memory()
    assert released == (platform.libc_ver()[0] == "glibc")


def test_release_is_a_no_op_without_malloc_trim(monkeypatch) -> None:
    monkeypatch.setattr(memory, "_trim", None)
    assert memory.release_free_memory() is False
