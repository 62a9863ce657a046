"""mlxk's own ``cblas_sgemm`` in front of OpenBLAS, for the few-row products of decode.

``skinny_gemm.c``, built as the optional extension ``mlxk.accel._skinny_gemm``, takes the
products with at most 16 rows on one side (decode's linear layers, the lm_head, attention),
where OpenBLAS reaches half the memory bandwidth, and hands every other call on to the BLAS
it is given. :mod:`mlxk.accel.blas` attaches it while it loads OpenBLAS, so that it comes
first in the global symbol scope, where MLX looks ``cblas_sgemm`` up.

``MLXK_DECODE_GEMM=off`` leaves it out; ``MLXK_DECODE_GEMM_ROWS`` (default 16) and
``MLXK_DECODE_GEMM_THREADS`` (default: CPUs, at most 8) tune it. Its thread count follows
the CPUs other processes leave free (``MLXK_DECODE_GEMM_ADAPT=off``: always the most), and
its OpenMP threads spin only briefly before they sleep (``GOMP_SPINCOUNT``, unless the
OpenMP wait policy is set already): on a shared CPU a spinning thread takes the time the
thread doing the work needs.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
from dataclasses import dataclass

from mlxk.accel import gate

VERIFIED_MLX = ("0.32.4",)  # MLX binds cblas_sgemm from the global scope, row-major calls
SPINCOUNT = "10000"  # OpenMP's default (300000) spins ~1 ms after each product


@dataclass(frozen=True)
class GemmInfo:
    on: bool  # loaded first in the global scope, pointed at the BLAS
    note: str  # why not, when it is worth saying


_INFO: GemmInfo | None = None
_LIB = None


def library_path() -> str | None:
    """The built extension (found, not loaded), or None when it was not built."""
    spec = importlib.util.find_spec("mlxk.accel._skinny_gemm")
    return spec.origin if spec and spec.origin else None


def why_not() -> str | None:
    """Why it stays out, without loading anything; None when it can go in front of a BLAS."""
    if gate.switched_off("MLXK_DECODE_GEMM"):
        return "MLXK_DECODE_GEMM=off"
    if library_path() is None:
        return "not built (no C compiler when mlxk was installed)"
    return gate.unverified(VERIFIED_MLX)


def attach(blas_handle: ctypes.CDLL) -> GemmInfo:
    """Put mlxk's cblas_sgemm first in the global scope and point it at the BLAS's own.

    Called by blas.setup between opening the BLAS privately and loading it globally."""
    global _INFO, _LIB
    why = why_not()
    if why is not None:
        _INFO = GemmInfo(False, why)
        return _INFO
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = SPINCOUNT  # read once, when libgomp loads with us
    try:
        lib = ctypes.CDLL(library_path(), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        _INFO = GemmInfo(False, f"could not be loaded: {exc}")
        return _INFO
    forward = ctypes.cast(blas_handle.cblas_sgemm, ctypes.c_void_p)
    rows = gate.env_int("MLXK_DECODE_GEMM_ROWS")  # 0 keeps the library's default (16)
    threads = gate.env_int("MLXK_DECODE_GEMM_THREADS") or min(len(os.sched_getaffinity(0)), 8)
    lib.mlxk_skinny_configure(forward, ctypes.c_int(rows), ctypes.c_int(threads),
                              ctypes.c_int(0 if gate.switched_off("MLXK_DECODE_GEMM_ADAPT") else 1))
    lib.mlxk_skinny_next.restype = ctypes.c_void_p
    # a BLAS in LD_PRELOAD comes first in the global scope and would shadow ours: then MLX
    # never calls it, and saying it is in use would be wrong
    first = ctypes.cast(ctypes.CDLL(None).cblas_sgemm, ctypes.c_void_p).value
    if first != ctypes.cast(lib.cblas_sgemm, ctypes.c_void_p).value:
        _INFO = GemmInfo(False, "shadowed by a BLAS loaded before it (LD_PRELOAD?)")
        return _INFO
    _LIB = lib
    _INFO = GemmInfo(True, "")
    return _INFO


def info() -> GemmInfo | None:
    """What attach() did in this process; None when it was not asked."""
    return _INFO


def counts() -> tuple[int, int] | None:
    """(calls that took the few-row path, calls handed on to the BLAS), or None if not in use."""
    if _LIB is None:
        return None
    fast, forwarded = ctypes.c_long(), ctypes.c_long()
    _LIB.mlxk_skinny_counts(ctypes.byref(fast), ctypes.byref(forwarded))
    return fast.value, forwarded.value


def threads() -> dict[str, float | int | None] | None:
    """The most threads, the current choice and the CPUs other processes used lately."""
    if _LIB is None:
        return None
    most, now, others = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    _LIB.mlxk_skinny_threads(ctypes.byref(most), ctypes.byref(now), ctypes.byref(others))
    return {"most": most.value, "now": now.value,
            "others_cpus": None if others.value < 0 else round(others.value / 1000, 2)}


def forward_address() -> int | None:
    """Where the calls it does not take go (the BLAS's cblas_sgemm)."""
    return _LIB.mlxk_skinny_next() if _LIB is not None else None


def sgemm_address() -> int | None:
    return ctypes.cast(_LIB.cblas_sgemm, ctypes.c_void_p).value if _LIB is not None else None
