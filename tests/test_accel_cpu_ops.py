"""The replaced mx functions (mlxk/accel/cpu_ops.py, chosen in ops_plan.py): logsumexp gives
MLX's own bits for every shape the engine calls and is on by default; attention does not
give the same bits and is replaced only on request (MLXK_CPU_OPS).

Each side runs in a fresh interpreter (the replacement is process-wide, made by the
bootstrap before anything else uses mlx) and writes its results to a file; the bits are
compared here, so no test reaches into the module for MLX's original function.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mlxk.accel import cpu_kernels

needs_flags = pytest.mark.skipif(
    cpu_kernels.plan().flags == (), reason=f"not used here: {cpu_kernels.plan().note}")

SDPA = "mx.fast.scaled_dot_product_attention"


# The vocabularies of the supported families (SmolLM2, Llama 2/Mistral, Phi-3, GPT-2, Phi-4,
# Llama 3, Mistral Nemo, Qwen2, Gemma, Gemma 3), as mlx-lm's samplers see them: the
# BatchGenerator's (rows, vocab) over the last axis for 1-32 sequences, the single-sequence
# step's (1, vocab) over all axes, and the last position of a prefill's (rows, L, vocab),
# a strided view.
LOGSUMEXP = """
    import json, sys
    import numpy as np
    from mlxk import accel
    boot = accel.bootstrap()
    import mlx.core as mx

    rng = np.random.default_rng(7)
    out = {}
    def put(key, x, **kw):
        out[key] = np.array(mx.logsumexp(x, **kw))

    for vocab in (49152, 50257):  # every batch size; 50257 puts rows at every alignment
        for rows in range(1, 33):
            put(f"{vocab}-{rows}", mx.array(rng.standard_normal((rows, vocab), dtype=np.float32) * 4 + 2),
                axis=-1, keepdims=True)
    for vocab in (32000, 32064, 100352, 128256, 131072, 151936, 256000, 262144):
        for rows in (1, 2, 3, 8, 16, 32):
            put(f"{vocab}-{rows}", mx.array(rng.standard_normal((rows, vocab), dtype=np.float32) * 6),
                axis=-1, keepdims=True)
    for vocab in (49152, 50257, 151936):
        put(f"{vocab}-one-row-all-axes", mx.array(rng.standard_normal((1, vocab), dtype=np.float32) * 5),
            keepdims=True)
        prefill = mx.array(rng.standard_normal((4, 3, vocab), dtype=np.float32) * 5)
        put(f"{vocab}-prefill-last", prefill[:, -1, :], axis=-1, keepdims=True)
    inf = float("inf")
    special = rng.standard_normal((4, 49152), dtype=np.float32)
    special[0, :] = -inf            # every token masked
    special[1, 5] = inf
    special[2, ::7] = -inf          # some tokens masked (a logits processor)
    special[3, :] = 80.0            # large logits: exp overflows without the max
    put("special", mx.array(special), axis=-1, keepdims=True)
    np.savez(sys.argv[-1], **out)
    print(json.dumps({"ops": list(boot.ops), "module": mx.logsumexp.__module__, "n": len(out)}))
"""


@needs_flags
def test_logsumexp_gives_mlxs_own_bits_for_every_engine_shape(tmp_path):
    mine, theirs = tmp_path / "mine.npz", tmp_path / "mlx.npz"
    on = _run_to(LOGSUMEXP, mine)
    off = _run_to(LOGSUMEXP, theirs, MLXK_CPU_OPS="off")
    assert on["ops"] == ["logsumexp"] and on["module"] == "mlxk.accel.cpu_ops"  # on by default
    assert off["ops"] == [] and off["module"] != "mlxk.accel.cpu_ops"
    got, want = np.load(mine), np.load(theirs)
    assert sorted(got.files) == sorted(want.files) and len(got.files) == on["n"] == 2 * 32 + 8 * 6 + 3 * 2 + 1
    differ = [k for k in got.files if got[k].shape != want[k].shape or got[k].tobytes() != want[k].tobytes()]
    assert differ == []
    assert np.array(got["special"]).ravel()[:2].tolist() == [-np.inf, np.inf]


def _run_to(code: str, target: Path, **env: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(target)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


ATTENTION = """
    import json, sys
    import numpy as np
    from mlxk import accel
    boot = accel.bootstrap()
    import mlx.core as mx

    rng = np.random.default_rng(0)
    def r(*shape):
        return mx.array(rng.standard_normal(shape, dtype=np.float32))
    def qkv(B, nq, nkv, L, S, D=64):
        return r(B, nq, L, D), r(B, nkv, S, D), r(B, nkv, S, D)
    cases = []
    for nq, nkv in ((9, 3), (4, 4)):
        cases += [
            (qkv(1, nq, nkv, 1, 1), None),                                   # first token: one key
            (qkv(3, nq, nkv, 1, 37), None),                                  # decode, one sequence each
            (qkv(3, nq, nkv, 1, 37), r(3, 1, 1, 37) > -0.5),                 # batch decode: left padding
            (qkv(2, nq, nkv, 6, 6), "causal"),                               # prefill
            (qkv(2, nq, nkv, 4, 11), "causal"),                              # prefill after a cached prefix
            (qkv(2, nq, nkv, 4, 11), r(2, nq, 4, 11)),                       # additive, per head
            (qkv(2, nq, nkv, 4, 11), mx.zeros((2, 1, 4, 11), dtype=mx.bool_)),  # every key masked
        ]
    out = {}
    for i, ((q, k, v), mask) in enumerate(cases):
        out[f"f32-{i}"] = np.array(mx.fast.scaled_dot_product_attention(q, k, v, scale=0.125, mask=mask))
    q, k, v = qkv(2, 4, 4, 3, 3)
    half = [t.astype(mx.float16) for t in (q, k, v)]
    out["f16"] = np.array(mx.fast.scaled_dot_product_attention(*half, scale=0.1, mask="causal").astype(mx.float32))
    out["sinks"] = np.array(mx.fast.scaled_dot_product_attention(q, k, v, scale=0.1, sinks=r(4)))
    np.savez(sys.argv[-1], **out)
    print(json.dumps({"ops": list(boot.ops), "sdpa": mx.fast.scaled_dot_product_attention.__module__}))
"""


@needs_flags
def test_attention_is_replaced_only_on_request_and_then_stays_close(tmp_path):
    default = _run_to(ATTENTION, tmp_path / "default.npz")
    asked = _run_to(ATTENTION, tmp_path / "asked.npz", MLXK_CPU_OPS="on")
    assert default["ops"] == ["logsumexp"] and default["sdpa"] != "mlxk.accel.cpu_ops"
    assert asked["ops"] == ["logsumexp", "attention"] and asked["sdpa"] == "mlxk.accel.cpu_ops"
    mlx_own, mine = np.load(tmp_path / "default.npz"), np.load(tmp_path / "asked.npz")
    f32 = [k for k in mine.files if k.startswith("f32-")]
    assert len(f32) == 14
    worst = max(float(np.abs(mine[k] - mlx_own[k]).max()) for k in f32)
    assert worst < 1e-5
    # what it does not take (half precision, attention sinks) goes to MLX unchanged
    assert mine["f16"].tobytes() == mlx_own["f16"].tobytes()
    assert mine["sinks"].tobytes() == mlx_own["sinks"].tobytes()
    # not the same bits: that is why it is opt-in (if this ever fails, it could be on by default)
    assert any(mine[k].tobytes() != mlx_own[k].tobytes() for k in f32)


@needs_flags
def test_only_the_named_ops_are_replaced_and_an_unknown_name_replaces_none(tmp_path):
    from tests.conftest import run_json

    only_attention, _ = run_json("doctor", env={"MLXK_CPU_OPS": "attention"})
    assert only_attention["data"]["accel"]["cpu_ops"]["observed"]["replaced"] == [SDPA]
    typo, _ = run_json("doctor", env={"MLXK_CPU_OPS": "logsumexpp"})
    ops = typo["data"]["accel"]["cpu_ops"]
    assert ops["on"] is False and ops["observed"]["replaced"] == []
    assert ops["reason"] == "MLXK_CPU_OPS: unknown logsumexpp (known: logsumexp, attention, on, off)"
