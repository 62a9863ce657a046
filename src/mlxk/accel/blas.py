"""Give MLX's CPU backend a fast BLAS.

The mlx-cpu wheel links the reference BLAS it bundles, which is ~30x slower than
OpenBLAS for the matmuls of a small LLM. Loading an OpenBLAS ``libblas`` with
RTLD_GLOBAL before the first ``import mlx.core`` makes the dynamic linker resolve MLX's
BLAS symbols to it. ``MLXK_BLAS=off`` keeps the bundled one; ``MLXK_BLAS=/path/lib.so``
picks a library. :func:`mlxk.accel.bootstrap` calls :func:`setup` before mlx is imported.

mlxk's decode GEMM (:mod:`mlxk.accel.decode_gemm`) goes in front of OpenBLAS here: the BLAS
is opened privately first, its ``cblas_sgemm`` handed to the decode GEMM, which is loaded
globally, and only then the BLAS itself.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from mlxk.accel import decode_gemm, gate

VERIFIED_MLX = ("0.32.4",)  # the wheel's BLAS: LP64 cblas_* resolved through the global scope

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
BUNDLED = "bundled reference BLAS"
INSTALL_HINT = "slow on the CPU; install OpenBLAS (Debian/Ubuntu: apt-get install libopenblas0-pthread)"


@dataclass(frozen=True)
class BlasInfo:
    name: str  # "OpenBLAS", "bundled reference BLAS", "Accelerate"
    path: str | None
    note: str  # why not OpenBLAS, when it is worth saying


_INFO: BlasInfo | None = None
_HANDLE = None


def find() -> str | None:
    """The OpenBLAS library to load: MLXK_BLAS's choice, else the first candidate present."""
    choice = os.environ.get("MLXK_BLAS", "").strip()
    if choice.lower() in ("off", "0", "none", "bundled"):
        return None
    if choice:
        return choice if Path(choice).exists() else None
    return next((c for c in CANDIDATES if Path(c).exists()), None)


def plan() -> BlasInfo:
    """What setup() chooses, without loading anything."""
    if _INFO is not None:
        return _INFO
    if platform.system() == "Darwin":
        return BlasInfo("Accelerate", None, "")
    if platform.system() != "Linux":
        return BlasInfo(BUNDLED, None, "")
    path = find()
    if path is None:
        return BlasInfo(BUNDLED, None, "set MLXK_BLAS=off to silence" if os.environ.get("MLXK_BLAS") else INSTALL_HINT)
    why = gate.unverified(VERIFIED_MLX)
    if why is not None:
        return BlasInfo(BUNDLED, None, f"OpenBLAS {why}")
    return BlasInfo("OpenBLAS", path, "")


def setup() -> BlasInfo:
    """Load OpenBLAS globally (with the decode GEMM in front) if mlx is not imported yet. Idempotent."""
    global _INFO, _HANDLE
    if _INFO is not None:
        return _INFO
    chosen = plan()
    if chosen.path is None:
        _INFO = chosen
        return _INFO
    if "mlx.core" in sys.modules:
        _INFO = BlasInfo(BUNDLED, None, "mlx was imported before the BLAS could be set up")
        return _INFO
    try:
        blas_handle = ctypes.CDLL(chosen.path, mode=ctypes.RTLD_LOCAL)
        decode_gemm.attach(blas_handle)
        _HANDLE = ctypes.CDLL(chosen.path, mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        _INFO = BlasInfo(BUNDLED, None, f"could not load {chosen.path}: {exc}")
        return _INFO
    _INFO = chosen
    return _INFO


def info() -> BlasInfo | None:
    """What setup() did in this process; None when it was not asked."""
    return _INFO


def sgemm_address(handle: ctypes.CDLL | None = None) -> int | None:
    """Where cblas_sgemm resolves in the global scope (where MLX looks it up)."""
    try:
        return ctypes.cast((handle or ctypes.CDLL(None)).cblas_sgemm, ctypes.c_void_p).value
    except AttributeError:
        return None
