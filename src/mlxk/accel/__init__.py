"""mlxk's Linux-CPU speed-ups for MLX, set up in one place before mlx is imported.

MLX's Linux CPU wheel is built for baseline x86-64 and bundles a reference BLAS. mlxk makes
it fast by reaching into it from outside, in four pieces:

* :mod:`~mlxk.accel.blas`: OpenBLAS loaded into the global symbol scope, where MLX looks
  its BLAS up (``MLXK_BLAS``);
* :mod:`~mlxk.accel.decode_gemm`: mlxk's few-row ``cblas_sgemm`` in front of it
  (``skinny_gemm.c``, ``MLXK_DECODE_GEMM``);
* :mod:`~mlxk.accel.cpu_kernels`: MLX's JIT kernels built with this CPU's flags
  (``MLXK_CPU_KERNELS``);
* :mod:`~mlxk.accel.cpu_ops`: ``mx`` functions replaced by such kernels
  (``MLXK_CPU_OPS``, see :mod:`~mlxk.accel.ops_plan`).

The first three only work if they are in place before mlx is loaded, so every entry point
that will use mlx calls :func:`bootstrap` first, and nothing else sets them up. Each piece
names the mlx versions it was verified with and stays off with another (:mod:`gate`).
:mod:`mlxk.accel.report` says what is in use, as observed in the running process.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from mlxk.accel import blas, cpu_kernels, ops_plan


@dataclass(frozen=True)
class Boot:
    mlx_was_loaded: bool  # mlx.core was imported before the bootstrap: too late for the BLAS
    ops: tuple[str, ...]  # the mx functions asked to be replaced
    ops_note: str  # why none, when that is worth saying


_BOOT: Boot | None = None


def bootstrap() -> Boot:
    """Set up every CPU speed-up that applies here. Call before mlx is imported. Idempotent."""
    global _BOOT
    if _BOOT is not None:
        return _BOOT
    early = "mlx.core" in sys.modules
    blas.setup()
    kernels = cpu_kernels.setup()
    ops, note = ops_plan.plan(bool(kernels.flags))
    if ops:
        from mlxk.accel import cpu_ops  # imports mlx: only now, after the BLAS set-up

        if not cpu_ops.install(ops):
            ops, note = (), "not on the CPU device"
    _BOOT = Boot(early, ops, note)
    return _BOOT


def booted() -> Boot | None:
    """What bootstrap() did in this process; None when it has not run."""
    return _BOOT
