"""MLX's fused CPU kernels built for this CPU (accel/cpu_kernels.py). The exp-heavy ops routed
through such kernels (accel/cpu_ops.py) are tested in test_accel_cpu_ops.py.

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

from mlxk.accel import cpu_kernels

needs_flags = pytest.mark.skipif(
    cpu_kernels.plan().flags == (), reason=f"not used here: {cpu_kernels.plan().note}")

# a compiled sigmoid-times-x, as mlx-lm's SwiGLU is: MLX turns it into a JIT-built kernel
SILU = """
    import json, os
    from mlxk import accel
    from mlxk.accel import cpu_kernels, report
    accel.bootstrap()
    info = cpu_kernels.info()
    import mlx.core as mx
    x = mx.linspace(-8, 8, 4099)
    fused = mx.compile(lambda v: mx.sigmoid(v) * v)(x)
    plain = mx.sigmoid(x) * x
    print(json.dumps({"flags": list(info.flags), "note": info.note, "tmpdir": os.environ.get("TMPDIR"),
                      "close": bool(mx.allclose(fused, plain, rtol=1e-5, atol=1e-6).item()),
                      "report": report.observe().as_json()["cpu_kernels"]}))
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
    # the report saw the kernel loaded from mlxk's folder, not just planned
    assert out["report"]["on"] is True and out["report"]["observed"]["loaded_from_mlxk_folder"] >= 1
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
    assert plain["report"]["on"] is False and plain["report"]["reason"] == "MLXK_CPU_KERNELS=off"
    assert any(b"fmaf" in so.read_bytes() for so in _kernels(tmp_path / "user-tmp"))


@needs_flags
def test_without_gxx_mlx_is_left_alone(tmp_path):
    env = {**os.environ, "MLXK_CACHE_DIR": str(tmp_path / "mlxk"), "TMPDIR": str(tmp_path), "PATH": str(tmp_path / "empty")}
    out = _run("""
        import json, os
        from mlxk import accel
        from mlxk.accel import cpu_kernels
        accel.bootstrap()
        info = cpu_kernels.info()
        print(json.dumps({"flags": list(info.flags), "line": info.summary(), "tmpdir": os.environ["TMPDIR"],
                          "path": os.environ["PATH"]}))
    """, env)
    assert out["flags"] == [] and "no g++ on PATH" in out["line"]
    assert out["tmpdir"] == str(tmp_path) and out["path"] == str(tmp_path / "empty")


@needs_flags
def test_the_gxx_wrapper_renames_into_place_and_cleans_up_after_a_failure(tmp_path):
    env = {**os.environ, "MLXK_CACHE_DIR": str(tmp_path / "mlxk")}
    _run("from mlxk import accel; accel.bootstrap(); print('{}')", env)
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
    kernels = payload["data"]["accel"]["cpu_kernels"]
    assert (kernels["on"], kernels["summary"], kernels["reason"]) == (False, "MLX defaults", "MLXK_CPU_KERNELS=off")
    # the replaced mx functions need the kernels: without them, MLX's own
    assert payload["data"]["accel"]["cpu_ops"]["on"] is False
    assert payload["data"]["accel"]["cpu_ops"]["reason"] == "needs the CPU kernels"
