"""MLX's fused CPU kernels built for this CPU (engine/cpu_kernels.py), and the step's exp-heavy
ops routed through them (engine/cpu_ops.py).

Each check runs in a fresh interpreter: setup() changes PATH and TMPDIR for its process,
and MLX keeps compiled kernels for the life of a process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlxk.engine import cpu_kernels

needs_flags = pytest.mark.skipif(
    cpu_kernels.describe().flags == (), reason=f"not used here: {cpu_kernels.describe().note}")

# a compiled sigmoid-times-x, as mlx-lm's SwiGLU is: MLX turns it into a JIT-built kernel
SILU = """
    import json, os
    from mlxk.engine import cpu_kernels
    info = cpu_kernels.setup()
    import mlx.core as mx
    x = mx.linspace(-8, 8, 4099)
    fused = mx.compile(lambda v: mx.sigmoid(v) * v)(x)
    plain = mx.sigmoid(x) * x
    print(json.dumps({"flags": list(info.flags), "note": info.note, "tmpdir": os.environ.get("TMPDIR"),
                      "close": bool(mx.allclose(fused, plain, rtol=1e-5, atol=1e-6).item())}))
"""


def _run(code: str, env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _kernels(tmpdir: Path) -> list[Path]:
    return sorted(tmpdir.glob("mlx/*/cpu/lib*.so"))


@needs_flags
def test_kernels_are_built_with_the_cpu_flags_in_mlxks_own_folder(tmp_path):
    env = {**os.environ, "MLXK_CACHE_DIR": str(tmp_path / "mlxk"), "TMPDIR": str(tmp_path / "user-tmp")}
    (tmp_path / "user-tmp").mkdir()
    out = _run(SILU, env)
    assert out["flags"] == ["-mavx2", "-mfma", "-mf16c"] and out["close"]
    folder = tmp_path / "mlxk" / "cpu-kernels" / "avx2-fma-f16c"
    assert out["tmpdir"] == str(folder / "tmp")
    built = _kernels(folder / "tmp")
    assert built, "MLX built no kernel in mlxk's folder"
    assert not _kernels(tmp_path / "user-tmp")  # never mixed with the user's default kernel cache
    # with FMA allowed, exp's fmaf is an instruction, not a call into libm
    assert all(b"fmaf" not in so.read_bytes() for so in built)
    assert not list(folder.glob("tmp/mlx/*/cpu/*.tmp"))  # every build was renamed into place

    # the same kernel built the way MLX does by itself calls libm's fmaf
    plain = _run(SILU, {**env, "MLXK_CPU_KERNELS": "off"})
    assert plain["flags"] == [] and plain["note"] == "MLXK_CPU_KERNELS=off" and plain["close"]
    assert plain["tmpdir"] == str(tmp_path / "user-tmp")
    assert any(b"fmaf" in so.read_bytes() for so in _kernels(tmp_path / "user-tmp"))


@needs_flags
def test_without_gxx_mlx_is_left_alone(tmp_path):
    env = {**os.environ, "MLXK_CACHE_DIR": str(tmp_path / "mlxk"), "TMPDIR": str(tmp_path), "PATH": str(tmp_path / "empty")}
    out = _run("""
        import json, os
        from mlxk.engine import cpu_kernels
        info = cpu_kernels.setup()
        print(json.dumps({"flags": list(info.flags), "line": info.line(), "tmpdir": os.environ["TMPDIR"],
                          "path": os.environ["PATH"]}))
    """, env)
    assert out["flags"] == [] and "no g++ on PATH" in out["line"]
    assert out["tmpdir"] == str(tmp_path) and out["path"] == str(tmp_path / "empty")


@needs_flags
def test_the_gxx_wrapper_renames_into_place_and_cleans_up_after_a_failure(tmp_path):
    env = {**os.environ, "MLXK_CACHE_DIR": str(tmp_path / "mlxk")}
    _run("import json; from mlxk.engine import cpu_kernels; cpu_kernels.setup(); print('{}')", env)
    gxx = tmp_path / "mlxk" / "cpu-kernels" / "avx2-fma-f16c" / "bin" / "g++"
    (tmp_path / "ok.cpp").write_text('extern "C" float f(float a, float b, float c) { return __builtin_fmaf(a, b, c); }\n')
    (tmp_path / "bad.cpp").write_text("this is not C++\n")
    ok = subprocess.run([str(gxx), "-O3", "-fPIC", "-shared", str(tmp_path / "ok.cpp"), "-o", str(tmp_path / "libok.so")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert b"fmaf" not in (tmp_path / "libok.so").read_bytes()  # the flags were added
    bad = subprocess.run([str(gxx), "-O3", "-fPIC", "-shared", str(tmp_path / "bad.cpp"), "-o", str(tmp_path / "libbad.so")],
                         capture_output=True, text=True)
    assert bad.returncode != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.cpp", "libok.so", "mlxk", "ok.cpp"]


def test_off_switch_is_reported(tmp_path):
    from tests.conftest import run_json

    payload, rc = run_json("doctor", env={"MLXK_CPU_KERNELS": "off"})
    assert rc == 0
    assert payload["data"]["cpu_kernels"] == {"flags": [], "note": "MLXK_CPU_KERNELS=off"}


@needs_flags
def test_logsumexp_through_the_built_kernel_gives_mlxs_bits(tmp_path):
    out = _run("""
        import json
        from mlxk.engine import cpu_kernels, cpu_ops
        cpu_kernels.setup()
        import mlx.core as mx
        mlx_own = mx.logsumexp
        assert cpu_ops.install() and mx.logsumexp is cpu_ops.logsumexp
        inf = float("inf")
        # a last axis of 1 first: it must not shape what the kernel does for longer ones
        cases = [mx.random.normal((4, 1)), mx.random.normal((16, 4099)) * 7,
                 mx.array([[-inf] * 4, [1.0, inf, 2, 3], [1, 2, 3, 4.0]]), mx.random.normal((2, 3, 50)),
                 mx.random.normal((1, 4099)), mx.random.normal((4099,))]  # one row: all axes are the last
        same = []
        for x in cases:
            for kw in ({"axis": -1, "keepdims": True}, {"axis": -1}, {"axis": x.ndim - 1}, {"axis": 0}, {},
                       {"keepdims": True}):
                a, b = mx.logsumexp(x, **kw), mlx_own(x, **kw)
                same.append(a.shape == b.shape and mx.array_equal(a, b, equal_nan=True).item())
        print(json.dumps({"same": same, "inf_rows": mx.logsumexp(cases[2], axis=-1).tolist()}))
    """, {**os.environ, "MLXK_CACHE_DIR": str(tmp_path)})
    assert all(out["same"]) and len(out["same"]) == 36
    assert out["inf_rows"][:2] == [float("-inf"), float("inf")]


@needs_flags
def test_attention_through_the_built_softmax_matches_mlx(tmp_path):
    out = _run("""
        import json
        from mlxk.engine import cpu_kernels, cpu_ops
        cpu_kernels.setup()
        import mlx.core as mx
        mlx_own = mx.fast.scaled_dot_product_attention
        assert cpu_ops.install() and mx.fast.scaled_dot_product_attention is cpu_ops.scaled_dot_product_attention
        mx.random.seed(0)
        r = mx.random.normal
        def qkv(B, nq, nkv, L, S, D=64, dtype=mx.float32):
            return r((B, nq, L, D)).astype(dtype), r((B, nkv, S, D)).astype(dtype), r((B, nkv, S, D)).astype(dtype)
        cases = []
        for nq, nkv in ((9, 3), (4, 4)):
            cases += [
                (qkv(1, nq, nkv, 1, 1), None),                                   # first token: one key
                (qkv(3, nq, nkv, 1, 37), None),                                  # decode, one sequence each
                (qkv(3, nq, nkv, 1, 37), r((3, 1, 1, 37)) > -0.5),               # batch decode: left padding
                (qkv(2, nq, nkv, 6, 6), "causal"),                               # prefill
                (qkv(2, nq, nkv, 4, 11), "causal"),                              # prefill after a cached prefix
                (qkv(2, nq, nkv, 4, 11), r((2, nq, 4, 11))),                     # additive, per head
                (qkv(2, nq, nkv, 4, 11), mx.zeros((2, 1, 4, 11), dtype=mx.bool_)),  # every key masked
            ]
        worst = 0.0
        for (q, k, v), mask in cases:
            a = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.125, mask=mask)
            b = mlx_own(q, k, v, scale=0.125, mask=mask)
            assert a.shape == b.shape and a.dtype == b.dtype
            worst = max(worst, mx.abs(a - b).max().item())
        # what it does not take goes to MLX unchanged
        q, k, v = qkv(2, 4, 4, 3, 3, dtype=mx.float16)
        same16 = mx.array_equal(mx.fast.scaled_dot_product_attention(q, k, v, scale=0.1, mask="causal"),
                                mlx_own(q, k, v, scale=0.1, mask="causal")).item()
        q, k, v = qkv(2, 4, 4, 3, 3)
        sinks = r((4,))
        same_sinks = mx.array_equal(mx.fast.scaled_dot_product_attention(q, k, v, scale=0.1, sinks=sinks),
                                    mlx_own(q, k, v, scale=0.1, sinks=sinks)).item()
        print(json.dumps({"worst": worst, "same16": same16, "same_sinks": same_sinks, "n": len(cases)}))
    """, {**os.environ, "MLXK_CACHE_DIR": str(tmp_path)})
    assert out["n"] == 14 and out["worst"] < 1e-5
    assert out["same16"] and out["same_sinks"]
