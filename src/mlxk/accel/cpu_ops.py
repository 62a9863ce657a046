"""The exp-heavy work of every decode step, through kernels built for this CPU.

Two places spend a decode step's exps: mlx-lm's BatchGenerator normalizes each step's
logits with ``mx.logsumexp`` over the whole vocabulary (16 x 49152 values for 16 sequences
of the demo model), and attention's softmax (``mx.fast.scaled_dot_product_attention``,
which on the CPU is matmul, softmax, matmul). MLX's CPU logsumexp and softmax live in
libmlx, built for baseline x86-64: a scalar exp whose multiply-adds are calls into libm.
Written as MLX ops under ``mx.compile``, the same math becomes fused kernels that
cpu_kernels has MLX build with AVX2/FMA: on the bench machine logsumexp takes 4 ms instead
of 12 (same bits) and a step's attention softmaxes 5 ms instead of 13 (within 1e-8, not the
same bits). :func:`install` routes float32 calls on the CPU device through them; every other
call (other dtypes, attention sinks, an explicit stream) goes to MLX's own. Which of the two
are replaced, and when, is decided in :mod:`mlxk.accel.ops_plan` (attention only on request);
:func:`mlxk.accel.bootstrap` installs them. This module imports mlx: import it only after
the bootstrap's BLAS set-up.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx

_MLX_LOGSUMEXP: Any = None
_MLX_SDPA: Any = None
_lse_kernel: Any = None  # made by install()
_softmax_kernel: Any = None


# Both kernels are compiled shapeless (traced once, whatever the shapes later), which is only
# sound if the trace saw the reduced axis longer than 1: traced with a last axis of 1, the
# `x - max` needs no broadcast, none is recorded, and a longer axis later reads past the
# maxima (heap corruption). So a last axis of 1 never goes through them.


def _lse_last(x):
    m = mx.max(x, axis=-1, keepdims=True)
    out = m + mx.log(mx.sum(mx.exp(x - m), axis=-1, keepdims=True))
    return mx.where(mx.isinf(m), m, out)  # all -inf stays -inf, an inf stays inf, as in MLX


def logsumexp(a, /, axis=None, keepdims=False, *, stream=None):
    """``mx.logsumexp``; last-axis float32 on the CPU goes through the compiled kernel."""
    if (stream is None and isinstance(a, mx.array) and a.dtype == mx.float32 and a.ndim >= 1
            and a.shape[-1] > 1 and mx.default_device() == mx.cpu
            # the last axis; or all axes of one row, as mlx-lm's single-sequence step asks
            and (axis in (-1, a.ndim - 1) or (axis is None and a.size == a.shape[-1]))):
        out = _lse_kernel(a)
        if keepdims:
            return out
        return out.squeeze(-1) if axis is not None else out.reshape(())
    return _MLX_LOGSUMEXP(a, axis=axis, keepdims=keepdims, stream=stream)


def _softmax_last(scores):
    e = mx.exp(scores - mx.max(scores, axis=-1, keepdims=True))
    return e / mx.sum(e, axis=-1, keepdims=True)


def scaled_dot_product_attention(q, k, v, *, scale, mask=None, sinks=None, **kw):
    """``mx.fast.scaled_dot_product_attention`` as MLX's own CPU fallback computes it, with
    the softmax through the compiled kernel."""
    known_mask = mask is None or isinstance(mask, mx.array) or (isinstance(mask, str) and mask == "causal")
    plain = (sinks is None and not kw and known_mask and mx.default_device() == mx.cpu
             and q.ndim == k.ndim == v.ndim == 4 and q.dtype == k.dtype == v.dtype == mx.float32)
    if not plain:
        return _MLX_SDPA(q, k, v, scale=scale, mask=mask, sinks=sinks, **kw)
    B, n_q, L, D = q.shape
    n_kv, S = k.shape[1], k.shape[2]
    rep = n_q // n_kv
    q = q * mx.array(scale, q.dtype)
    if rep > 1:  # grouped-query attention: each key head serves `rep` query heads
        q = q.reshape(B, n_kv, rep, L, D)
        k, v = k[:, :, None], v[:, :, None]
    scores = q @ k.swapaxes(-1, -2)
    if isinstance(mask, str):
        mask = (mx.arange(S - L, S)[:, None] >= mx.arange(S)[None])
    elif mask is not None:
        mask = mx.broadcast_to(mask, (B, n_q, L, S))
        if rep > 1:
            mask = mask.reshape(B, n_kv, rep, L, S)
    if mask is not None:
        if mask.dtype == mx.bool_:
            scores = mx.where(mask, scores, mx.array(mx.finfo(scores.dtype).min, scores.dtype))
        else:
            scores = scores + mask.astype(scores.dtype)
    out = (_softmax_kernel(scores) if S > 1 else _softmax_last(scores)) @ v
    return out.reshape(B, n_q, L, v.shape[-1]) if rep > 1 else out


def install(ops: tuple[str, ...]) -> list[str]:
    """Route the named ops ("logsumexp", "attention") through this module for this process.
    Returns the mx functions that are replaced now (none off the CPU device). Idempotent."""
    global _MLX_LOGSUMEXP, _MLX_SDPA, _lse_kernel, _softmax_kernel
    if mx.default_device() != mx.cpu:
        return []
    # shapeless: traced once, whatever the rows (logsumexp) or the keys (softmax) later
    if "logsumexp" in ops and _MLX_LOGSUMEXP is None:
        _lse_kernel = mx.compile(_lse_last, shapeless=True)
        _MLX_LOGSUMEXP = mx.logsumexp
        mx.logsumexp = logsumexp
    if "attention" in ops and _MLX_SDPA is None:
        _softmax_kernel = mx.compile(_softmax_last, shapeless=True)
        _MLX_SDPA = mx.fast.scaled_dot_product_attention
        mx.fast.scaled_dot_product_attention = scaled_dot_product_attention
    return replaced()


def replaced() -> list[str]:
    """The mx functions that are this module's right now (looked up, not remembered)."""
    return [name for name, mine in (("mx.logsumexp", mx.logsumexp is logsumexp),
                                    ("mx.fast.scaled_dot_product_attention",
                                     mx.fast.scaled_dot_product_attention is scaled_dot_product_attention)) if mine]
