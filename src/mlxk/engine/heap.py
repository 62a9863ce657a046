"""Give freed heap memory back to the system when the server goes idle (glibc only).

Under load the engine's KV caches grow and shrink by hundreds of MB (64 streams: ~0.5 GB of
live KV on the demo model). MLX frees them with ``free()``, but glibc keeps freed memory in
its arenas unless it sits at the very top of the heap, so the server's RSS stayed near its
peak after the load was gone (bench/soak.py: +29 % with MLX's own memory back where it
started). ``malloc_trim(0)`` returns the free pages of every arena; it walks the heap, so it
runs once when the batch empties, never during a step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import sys
import time

log = logging.getLogger("mlxk.engine")


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None (another libc or system): looked up once."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl and others lack it
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def release_free_memory() -> bool:
    """Return freed heap pages to the system; False where this libc cannot."""
    fn = _malloc_trim()
    if fn is None:
        return False
    started = time.monotonic()
    fn(0)
    log.debug("heap trimmed in %.0f ms", (time.monotonic() - started) * 1000)
    return True
