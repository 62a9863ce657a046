"""Give MLX's CPU backend a fast BLAS.

The mlx-cpu wheel links the reference BLAS it bundles, which is ~30x slower than
OpenBLAS for the matmuls of a small LLM. Loading an OpenBLAS ``libblas`` with
RTLD_GLOBAL before the first ``import mlx.core`` makes the dynamic linker resolve MLX's
BLAS symbols to it. ``MLXK_BLAS=off`` keeps the bundled one; ``MLXK_BLAS=/path/lib.so``
picks a library. Call :func:`setup` before anything imports mlx.

In front of OpenBLAS goes mlxk's own ``cblas_sgemm`` (``skinny_gemm.c``, built as the
optional extension ``mlxk.engine._skinny_gemm``): it takes the few-row products of decode,
where OpenBLAS reaches half the memory bandwidth, and hands every other call on to
OpenBLAS. ``MLXK_DECODE_GEMM=off`` leaves it out; ``MLXK_DECODE_GEMM_ROWS`` (default 16)
and ``MLXK_DECODE_GEMM_THREADS`` (default: CPUs, at most 8) tune it.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-openmp/libblas.so.3",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)


DECODE_GEMM_SUFFIX = " + mlxk decode GEMM"


@dataclass(frozen=True)
class BlasInfo:
    name: str  # "OpenBLAS", "bundled reference BLAS", "Accelerate", "not used"
    path: str | None
    note: str
    decode_gemm: bool = False  # mlxk's few-row sgemm sits in front of the BLAS

    def summary(self) -> str:
        return self.name + (f" ({self.path})" if self.path else "") + (DECODE_GEMM_SUFFIX if self.decode_gemm else "")

    def line(self) -> str:
        return f"BLAS: {self.summary()}" + (f" - {self.note}" if self.note else "")


_INFO: BlasInfo | None = None
_HANDLE = None
_SKINNY = None


def switched_off(name: str) -> bool:
    """An MLXK_* switch set to off (also 0, no, false, none)."""
    return os.environ.get(name, "").strip().lower() in ("off", "0", "no", "false", "none")


def _env_int(name: str) -> int:
    """A positive integer setting, or 0 (the default) for unset or unreadable values."""
    try:
        return max(0, int(os.environ.get(name, "") or 0))
    except ValueError:
        return 0


def skinny_path() -> str | None:
    """The built decode-GEMM library, unless it is missing or turned off."""
    if switched_off("MLXK_DECODE_GEMM"):
        return None
    spec = importlib.util.find_spec("mlxk.engine._skinny_gemm")  # finds the file, runs nothing
    return spec.origin if spec and spec.origin else None


def _load_skinny(blas_handle: ctypes.CDLL) -> tuple[bool, str]:
    """Put mlxk's cblas_sgemm first in the global scope and point it at the BLAS's own.

    Returns (in use, why not when that is worth saying)."""
    global _SKINNY
    path = skinny_path()
    if path is None:
        return False, ""
    try:
        lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        return False, f"mlxk's decode GEMM could not be loaded: {exc}"
    forward = ctypes.cast(blas_handle.cblas_sgemm, ctypes.c_void_p)
    rows = _env_int("MLXK_DECODE_GEMM_ROWS")  # 0 keeps the library's default (16)
    threads = _env_int("MLXK_DECODE_GEMM_THREADS") or min(len(os.sched_getaffinity(0)), 8)
    lib.mlxk_skinny_configure(forward, ctypes.c_int(rows), ctypes.c_int(threads))
    # a BLAS in LD_PRELOAD comes first in the global scope and would shadow ours: then MLX
    # never calls it, and saying it is in use would be wrong
    first = ctypes.cast(ctypes.CDLL(None).cblas_sgemm, ctypes.c_void_p).value
    if first != ctypes.cast(lib.cblas_sgemm, ctypes.c_void_p).value:
        return False, "mlxk's decode GEMM is shadowed (LD_PRELOAD?)"
    _SKINNY = lib
    return True, ""


def decode_gemm_counts() -> tuple[int, int] | None:
    """(calls that took the few-row path, calls handed on to the BLAS), or None if not in use."""
    if _SKINNY is None:
        return None
    fast, forwarded = ctypes.c_long(), ctypes.c_long()
    _SKINNY.mlxk_skinny_counts(ctypes.byref(fast), ctypes.byref(forwarded))
    return fast.value, forwarded.value


def find() -> str | None:
    choice = os.environ.get("MLXK_BLAS", "").strip()
    if choice.lower() in ("off", "0", "none", "bundled"):
        return None
    if choice:
        return choice if Path(choice).exists() else None
    return next((c for c in CANDIDATES if Path(c).exists()), None)


def setup() -> BlasInfo:
    """Load OpenBLAS globally if we can and mlx is not imported yet. Idempotent."""
    global _INFO, _HANDLE
    if _INFO is not None:
        return _INFO
    if platform.system() == "Darwin":
        _INFO = BlasInfo("Accelerate", None, "MLX on macOS uses Apple's Accelerate and Metal")
        return _INFO
    if platform.system() != "Linux":
        _INFO = BlasInfo("bundled", None, "")
        return _INFO
    path = find()
    if path is None:
        note = "set MLXK_BLAS=off to silence" if os.environ.get("MLXK_BLAS") else (
            "slow on the CPU; install OpenBLAS (Debian/Ubuntu: apt-get install libopenblas0-pthread)"
        )
        _INFO = BlasInfo("bundled reference BLAS", None, note)
        return _INFO
    if "mlx.core" in sys.modules:
        _INFO = BlasInfo("bundled reference BLAS", None, "mlx was imported before the BLAS could be set up")
        return _INFO
    try:
        # mlxk's decode GEMM must come first in the global scope: open the BLAS privately,
        # hand its cblas_sgemm to the decode GEMM, load that globally, then the BLAS
        blas_handle = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
        skinny, note = _load_skinny(blas_handle)
        _HANDLE = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        _INFO = BlasInfo("bundled reference BLAS", None, f"could not load {path}: {exc}")
        return _INFO
    _INFO = BlasInfo("OpenBLAS", path, note, decode_gemm=skinny)
    return _INFO


def describe() -> BlasInfo:
    """What setup() would choose, without loading anything (for --version and doctor)."""
    if _INFO is not None:
        return _INFO
    if platform.system() == "Darwin":
        return BlasInfo("Accelerate", None, "")
    path = find()
    return BlasInfo("OpenBLAS", path, "", decode_gemm=skinny_path() is not None) if path else BlasInfo(
        "bundled reference BLAS", None, "slow on the CPU; install OpenBLAS (apt-get install libopenblas0-pthread)")
