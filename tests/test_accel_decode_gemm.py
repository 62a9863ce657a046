"""mlxk's decode GEMM (accel/skinny_gemm.c, accel/decode_gemm.py) in front of OpenBLAS: same numbers as the BLAS,
taken only where it should be, and a row's result does not depend on its batch.

Each check runs in a fresh interpreter: the library has to be in place before mlx is
imported, and other tests in this process may have imported mlx already.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from mlxk.accel import blas, decode_gemm

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the decode GEMM is built on Linux only")


def _run(code: str, **env: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_it_is_built_and_loaded_in_front_of_openblas():
    if blas.find() is None:
        pytest.skip("no OpenBLAS on this machine: the decode GEMM only sits in front of it")
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler: the optional extension could not be built")
    assert decode_gemm.library_path(), "a C compiler is here, but mlxk.accel._skinny_gemm was not built"
    out = _run("""
        import json
        from mlxk import accel
        from mlxk.accel import decode_gemm, report
        accel.bootstrap()
        print(json.dumps({"decode_gemm": decode_gemm.info().on, "counts": decode_gemm.counts(),
                          "report": report.observe().as_json()["decode_gemm"]}))
    """)
    assert out["decode_gemm"] is True and out["counts"] == [0, 0]
    # mlx is loaded (the bootstrap replaced mx.logsumexp), but MLX has not called it yet
    assert out["report"]["on"] is None and out["report"]["reason"] == "in front of the BLAS, not called yet"


def test_unreadable_tuning_values_fall_back_to_the_defaults():
    if blas.find() is None or decode_gemm.library_path() is None:
        pytest.skip("the decode GEMM is not in use here")
    out = _run("""
        import json
        from mlxk import accel
        from mlxk.accel import decode_gemm
        accel.bootstrap()
        import mlx.core as mx
        y = mx.ones((4, 64)) @ mx.ones((300, 64)).T
        print(json.dumps({"decode_gemm": decode_gemm.info().on, "sum": y.sum().item(), "counts": decode_gemm.counts()}))
    """, MLXK_DECODE_GEMM_ROWS="lots", MLXK_DECODE_GEMM_THREADS="-3")
    assert out == {"decode_gemm": True, "sum": 4 * 300 * 64.0, "counts": [1, 0]}


def test_a_preloaded_blas_shadows_it_and_setup_says_so():
    lib = blas.find()
    if lib is None or decode_gemm.library_path() is None:
        pytest.skip("the decode GEMM is not in use here")
    out = _run("""
        import json
        from mlxk import accel
        from mlxk.accel import decode_gemm
        accel.bootstrap()
        print(json.dumps({"decode_gemm": decode_gemm.info().on, "note": decode_gemm.info().note}))
    """, LD_PRELOAD=lib)
    assert out["decode_gemm"] is False and "shadowed" in out["note"]


def test_off_switch_leaves_plain_openblas():
    out = _run("""
        import json
        from mlxk import accel
        from mlxk.accel import decode_gemm
        accel.bootstrap()
        print(json.dumps({"decode_gemm": decode_gemm.info().on, "counts": decode_gemm.counts()}))
    """, MLXK_DECODE_GEMM="off")
    assert out == {"decode_gemm": False, "counts": None}


MATMULS = """
    import json
    from mlxk import accel
    from mlxk.accel import decode_gemm
    accel.bootstrap()
    import mlx.core as mx
    import numpy as np

    rng = np.random.default_rng(0)
    cases = [  # (M, N, K): decode shapes, attention shapes, odd sizes, and big ones for OpenBLAS
        (1, 1536, 576), (8, 1536, 576), (16, 576, 1536), (3, 49152, 64), (1, 67, 64), (9, 64, 200),
        (5, 7, 9), (2, 33, 8), (12, 100, 3), (17, 40, 40), (64, 64, 64), (300, 200, 100), (7, 1001, 100),
    ]
    worst = 0.0
    for m, n, k in cases:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        c = rng.standard_normal((m, n), dtype=np.float32)
        A, B, C, Bt = mx.array(a), mx.array(b), mx.array(c), mx.array(np.ascontiguousarray(b.T))
        ref = a.astype(np.float64) @ b.astype(np.float64)
        pairs = [
            (A @ B, ref),                                         # neither transposed
            (A @ Bt.T, ref),                                      # x @ W.T, the linear layer
            (Bt @ A.T, ref.T),                                    # W @ x.T, skinny on the right
            (mx.addmm(C, A, Bt.T, alpha=0.5, beta=2.0), 2.0 * c + 0.5 * ref),
            (mx.addmm(C, A, B, alpha=-1.0, beta=0.5), 0.5 * c - ref),
        ]
        for got, want in pairs:
            scale = max(1.0, float(np.abs(want).max()))
            worst = max(worst, float(np.abs(np.array(got) - want).max()) / scale)
    print(json.dumps({"worst": worst, "counts": decode_gemm.counts()}))
"""


def test_same_numbers_as_the_blas_for_every_shape_and_form():
    fast = _run(MATMULS)
    plain = _run(MATMULS, MLXK_DECODE_GEMM="off")
    assert fast["worst"] < 1e-5 and plain["worst"] < 1e-5
    if blas.find() and decode_gemm.library_path():
        took, forwarded = fast["counts"]
        assert took > 0 and forwarded > 0  # both paths ran: skinny products here, big ones on OpenBLAS


def test_a_row_gets_the_same_bits_alone_and_in_a_batch():
    out = _run("""
        import json
        from mlxk import accel
        from mlxk.accel import decode_gemm
        accel.bootstrap()
        import mlx.core as mx
        mx.random.seed(1)
        w = mx.random.normal((1537, 576))
        x = mx.random.normal((16, 576))
        batch = x @ w.T
        same = [bool(mx.array_equal(x[i:i + 1] @ w.T, batch[i:i + 1]).item()) for i in range(16)]
        subsets = [bool(mx.array_equal(x[:r] @ w.T, batch[:r]).item()) for r in (2, 3, 5, 8, 13)]
        print(json.dumps({"same": same, "subsets": subsets, "on": decode_gemm.counts() is not None}))
    """)
    if not out["on"]:
        pytest.skip("the decode GEMM is not in use here (OpenBLAS decides its own blocking)")
    assert all(out["same"]) and all(out["subsets"])


def test_column_major_calls_are_answered_too():
    """MLX calls row-major; a column-major call through the same symbol still gives C = A B."""
    if not (blas.find() and decode_gemm.library_path()):
        pytest.skip("the decode GEMM is not in use here")
    out = _run("""
        import ctypes, json
        import numpy as np
        from mlxk import accel
        from mlxk.accel import decode_gemm
        accel.bootstrap()
        f = ctypes.CDLL(None).cblas_sgemm  # the global scope's, as MLX finds it
        P, I, F = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
        f.argtypes = [I, I, I, I, I, I, F, P, I, P, I, F, P, I]
        rng = np.random.default_rng(2)
        x = rng.standard_normal((4, 96), dtype=np.float32)    # column-major 96 x 4: A, used transposed
        w = rng.standard_normal((300, 96), dtype=np.float32)  # column-major 96 x 300: B
        c = np.zeros((300, 4), dtype=np.float32)              # column-major 4 x 300: C
        before = decode_gemm.counts()[0]
        f(102, 112, 111, 4, 300, 96, 1.0, x.ctypes.data, 96, w.ctypes.data, 96, 0.0, c.ctypes.data, 4)
        took = decode_gemm.counts()[0] - before
        err = float(np.abs(c - w @ x.T).max())
        print(json.dumps({"err": err, "took": took}))
    """)
    assert out["err"] < 1e-4 and out["took"] == 1


BUSY_GEMMS = """
    import json, time
    from mlxk import accel
    from mlxk.accel import decode_gemm
    accel.bootstrap()
    import mlx.core as mx
    w, x = mx.ones((1536, 576)), mx.ones((4, 576))  # big enough for the threads
    end = time.monotonic() + 1.5
    while time.monotonic() < end:  # several of the GEMM's 200 ms load samples
        mx.eval(x @ w.T)
    print(json.dumps(decode_gemm.threads()))
"""


def test_the_threads_give_way_when_other_processes_fill_the_cpus():
    """With every CPU kept busy by other processes, the decode GEMM drops to fewer threads
    (a second thread would wait for a CPU at every product's closing barrier); with
    MLXK_DECODE_GEMM_ADAPT=off it keeps them all."""
    if not (blas.find() and decode_gemm.library_path()):
        pytest.skip("the decode GEMM is not in use here")
    cpus = os.cpu_count() or 1
    if min(len(os.sched_getaffinity(0)), 8) < 2:
        pytest.skip("one CPU: the decode GEMM runs one thread anyway")
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cpus)]
    try:
        adapted = _run(BUSY_GEMMS)
        fixed = _run(BUSY_GEMMS, MLXK_DECODE_GEMM_ADAPT="off")
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    assert adapted["others_cpus"] is not None and adapted["others_cpus"] >= 1
    assert adapted["now"] < adapted["most"]
    assert fixed["now"] == fixed["most"] >= 2
