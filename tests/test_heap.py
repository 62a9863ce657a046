"""engine/heap.py: memory freed in the middle of glibc's heap goes back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from pathlib import Path

import pytest

from mlxk.engine import heap

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_freed_blocks_below_a_live_one_are_given_back():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    if not hasattr(libc, "malloc_trim"):
        pytest.skip("this libc has no malloc_trim (not glibc)")
    size, count = 64 << 10, 3200  # 200 MB in blocks under the mmap threshold: they come from the heap
    blocks = [libc.malloc(size) for _ in range(count)]
    assert all(blocks)
    for b in blocks:
        ctypes.memset(b, 1, size)  # resident
    before = rss_mb()
    for b in blocks[:-1]:  # the last block stays: the heap's top cannot shrink past it
        libc.free(b)
    held = rss_mb()
    assert held > before - 50  # plain free() kept the pages
    assert heap.release_free_memory()
    after = rss_mb()
    libc.free(blocks[-1])
    assert after < held - 150, (before, held, after)
