"""Faster fp32 linear layers for decode on the CPU.

A decode step multiplies a handful of rows (one per running sequence) by every weight
matrix. MLX computes ``x @ W.T``, which OpenBLAS runs as a small-M GEMM that packs the
whole weight matrix on every call; the same product written ``(W @ x.T).T`` runs a decode
step 3-11% faster at 2-8 rows on x86 OpenBLAS (``bench/decode_step.py``, figures in
docs/performance.md). One row and prefill (many rows) keep the usual form, which is as
fast or faster there.

Only plain ``nn.Linear`` layers are touched (quantized ones have their own kernels), only
on the CPU, and ``MLXK_DECODE_GEMM=off`` turns it off. The weights are not copied: the
layers just change class.
"""

from __future__ import annotations

import functools
import os

MIN_ROWS, MAX_ROWS = 2, 8  # one row is a GEMV that OpenBLAS already streams well


def enable(model) -> int:
    """Switch the model's plain linear layers to the decode-friendly product; returns how many."""
    import mlx.core as mx
    import mlx.nn as nn

    if os.environ.get("MLXK_DECODE_GEMM", "").strip().lower() in ("off", "0", "no", "false"):
        return 0
    if mx.default_device() != mx.cpu:
        return 0
    cls = decode_linear_class()
    count = 0
    for _, module in model.named_modules():
        if type(module) is nn.Linear and module["weight"].dtype == mx.float32:
            module.__class__ = cls
            count += 1
    return count


@functools.cache
def decode_linear_class():
    """Built on first use so that importing this module does not import mlx."""
    import mlx.core as mx
    import mlx.nn as nn

    class DecodeLinear(nn.Linear):
        """nn.Linear that computes few-row products as ``(W @ x.T).T``."""

        def __call__(self, x: mx.array) -> mx.array:
            rows = x.size // x.shape[-1] if x.shape[-1] else 0
            if not MIN_ROWS <= rows <= MAX_ROWS:
                return super().__call__(x)
            y = mx.matmul(self["weight"], x.reshape(rows, x.shape[-1]).T).T
            if "bias" in self:
                y = y + self["bias"]
            return y.reshape(*x.shape[:-1], y.shape[-1])

    return DecodeLinear

