"""Give MLX's CPU backend a fast BLAS.

The mlx-cpu wheel links the reference BLAS it bundles, which is ~30x slower than
OpenBLAS for the matmuls of a small LLM. Loading an OpenBLAS ``libblas`` with
RTLD_GLOBAL before the first ``import mlx.core`` makes the dynamic linker resolve MLX's
BLAS symbols to it. ``MLXK_BLAS=off`` keeps the bundled one; ``MLXK_BLAS=/path/lib.so``
picks a library. Call :func:`setup` before anything imports mlx.
"""

from __future__ import annotations

import ctypes
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


@dataclass(frozen=True)
class BlasInfo:
    name: str  # "OpenBLAS", "bundled reference BLAS", "Accelerate", "not used"
    path: str | None
    note: str

    def line(self) -> str:
        where = f" ({self.path})" if self.path else ""
        return f"BLAS: {self.name}{where}" + (f" - {self.note}" if self.note else "")


_INFO: BlasInfo | None = None
_HANDLE = None


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
        _HANDLE = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        _INFO = BlasInfo("bundled reference BLAS", None, f"could not load {path}: {exc}")
        return _INFO
    _INFO = BlasInfo("OpenBLAS", path, "")
    return _INFO


def describe() -> BlasInfo:
    """What setup() would choose, without loading anything (for --version and doctor)."""
    if _INFO is not None:
        return _INFO
    if platform.system() == "Darwin":
        return BlasInfo("Accelerate", None, "")
    path = find()
    return BlasInfo("OpenBLAS", path, "") if path else BlasInfo(
        "bundled reference BLAS", None, "slow on the CPU; install OpenBLAS (apt-get install libopenblas0-pthread)")
