"""Which ``mx`` functions mlxk replaces for the whole process (:mod:`mlxk.accel.cpu_ops`).

Replacing a function of someone else's library changes it for every caller in the process,
so a replacement is on by default only where it gives MLX's own bits for every shape the
engine calls: ``logsumexp`` over the last axis or over one row (mlx-lm's samplers and
BatchGenerator), float32 on the CPU, which tests/test_accel_cpu_ops.py compares bit for
bit with MLX's for batches of 1-32 rows of the vocabulary sizes of the supported families.
The attention replacement differs from MLX's by up to ~1e-8 (the same math, another
summation order), so it is opt-in.

``MLXK_CPU_OPS``: unset gives the default (logsumexp); ``on``/``all`` adds attention;
``off`` replaces nothing; or a comma list of ``logsumexp``, ``attention``. Both need the CPU
kernels (:mod:`mlxk.accel.cpu_kernels`): without them the compiled kernels are no faster.
This module does not import mlx.
"""

from __future__ import annotations

import os

from mlxk.accel import gate

VERIFIED_MLX = ("0.32.4",)  # mx.logsumexp and mx.fast.scaled_dot_product_attention as replaced
KNOWN = ("logsumexp", "attention")
DEFAULT = ("logsumexp",)  # bit-identical to MLX's: on unless switched off


def wanted() -> tuple[tuple[str, ...], str]:
    """(the ops MLXK_CPU_OPS asks for, why none when that is worth saying)."""
    raw = os.environ.get("MLXK_CPU_OPS", "").strip().lower()
    if not raw:
        return DEFAULT, ""
    if raw in gate.OFF_WORDS:
        return (), "MLXK_CPU_OPS=off"
    if raw in gate.ON_WORDS:
        return KNOWN, ""
    names = tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
    unknown = [n for n in names if n not in KNOWN]
    if unknown:
        return (), f"MLXK_CPU_OPS: unknown {', '.join(unknown)} (known: {', '.join(KNOWN)}, on, off)"
    return names, ""


def plan(kernels_on: bool) -> tuple[tuple[str, ...], str]:
    """(the ops to replace, why none when that is worth saying), without importing mlx."""
    ops, why = wanted()
    if not ops:
        return (), why
    unverified = gate.unverified(VERIFIED_MLX)
    if unverified is not None:
        return (), unverified
    if not kernels_on:
        return (), "needs the CPU kernels"
    return ops, ""
