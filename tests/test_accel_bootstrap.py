"""mlxk.accel: one bootstrap before mlx, the mlx-version gate, and a report of what is
observed in use (mlxk doctor, --version, run --verbose, the server log).

The speed-ups take effect per process, before mlx loads, so each check runs the real
command or a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlxk.accel import blas, cpu_kernels, decode_gemm
from tests.conftest import run_cli, run_json

SRC = Path(__file__).resolve().parents[1] / "src" / "mlxk"
PIECES = ("blas", "decode_gemm", "cpu_kernels", "cpu_ops")
linux_openblas = pytest.mark.skipif(sys.platform != "linux" or blas.find() is None,
                                    reason="the speed-ups are for MLX on Linux with OpenBLAS")


def _run(code: str, **env: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_only_the_bootstrap_sets_the_speed_ups_up():
    """The rule "before mlx is imported" lives in one function; the entry points call it."""
    setups = re.compile(r"\b(blas|cpu_kernels)\.setup\(|\bcpu_ops\.install\(|\bdecode_gemm\.attach\(")
    callers = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if setups.search(p.read_text()))
    assert callers == ["accel/__init__.py", "accel/blas.py"]  # blas.setup attaches the decode GEMM
    booting = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if "accel.bootstrap()" in p.read_text())
    assert booting == ["engine/loader.py", "ops/convert.py", "ops/doctor.py", "server/worker.py"]
    assert not (SRC / "engine" / "blas.py").exists() and not list((SRC / "engine").glob("_skinny_gemm*"))


def test_run_boots_before_mlx_is_imported(demo_model_in_cache):
    out = _run("""
        import contextlib, io, json
        from mlxk.cli.main import main
        from mlxk import accel
        with contextlib.redirect_stdout(io.StringIO()):
            main(["run", "SmolLM2", "Name a color.", "--max-tokens", "3", "--json"])
        boot = accel.booted()
        print(json.dumps({"booted": boot is not None, "mlx_was_loaded": boot and boot.mlx_was_loaded}))
    """)
    assert out == {"booted": True, "mlx_was_loaded": False}


@linux_openblas
def test_mlx_imported_first_is_reported_as_it_is():
    """Too late for the BLAS: the report says so and shows MLX on its bundled BLAS."""
    out = _run("""
        import json
        import mlx.core as mx
        from mlxk import accel
        from mlxk.accel import report
        boot = accel.bootstrap()
        print(json.dumps({"early": boot.mlx_was_loaded, "report": report.observe(probe=True).as_json()}))
    """)
    b = out["report"]["blas"]
    assert out["early"] is True
    assert b["on"] is False and b["reason"] == "mlx was imported before the BLAS could be set up"
    assert b["observed"]["mlx_uses"].startswith("mlx_cpu.libs/libblas")
    assert out["report"]["decode_gemm"]["on"] is False


@linux_openblas
def test_an_unverified_mlx_turns_every_piece_off_with_the_reason():
    payload, rc = run_json("doctor", env={"MLXK_ACCEL_MLX_VERSION": "0.99.0"})
    assert rc == 0
    accel = payload["data"]["accel"]
    assert accel["mlx_version"] == "0.99.0"
    why = "not verified with mlx 0.99.0 (verified: 0.32.4; MLXK_ACCEL_UNVERIFIED=on runs it anyway)"
    assert accel["blas"]["reason"] == f"OpenBLAS {why}"
    for name in ("decode_gemm", "cpu_kernels", "cpu_ops"):
        assert (accel[name]["on"], accel[name]["reason"]) == (False, why), name
    # observed, not just decided: MLX really runs on its bundled BLAS, nothing of mlxk's loaded
    assert accel["blas"]["on"] is False and accel["blas"]["observed"]["mlx_uses"].startswith("mlx_cpu.libs/")
    assert not any("skinny" in m or "openblas" in m for m in accel["blas"]["observed"]["mapped"])
    assert f"BLAS: OpenBLAS {why}" in payload["data"]["problems"]
    human = run_cli("doctor", env={"MLXK_ACCEL_MLX_VERSION": "0.99.0"}).stdout
    assert f"[off: {why}]" in human

    trusted, _ = run_json("doctor", env={"MLXK_ACCEL_MLX_VERSION": "0.99.0", "MLXK_ACCEL_UNVERIFIED": "on"})
    assert trusted["data"]["accel"]["blas"]["on"] is True


@linux_openblas
def test_the_report_sees_a_preloaded_blas_shadow_the_decode_gemm():
    if decode_gemm.library_path() is None:
        pytest.skip("the decode GEMM was not built")
    payload, _ = run_json("doctor", env={"LD_PRELOAD": blas.find()})
    accel = payload["data"]["accel"]
    assert accel["decode_gemm"]["on"] is False and "shadowed" in accel["decode_gemm"]["reason"]
    assert "skinny" not in (accel["blas"]["observed"]["sgemm_resolves_to"] or "")
    assert accel["blas"]["on"] is True  # MLX still gets OpenBLAS, through the preload


@linux_openblas
def test_the_doctor_report_is_observed_and_names_no_absolute_path():
    payload, _ = run_json("doctor")
    accel = payload["data"]["accel"]
    assert not [s for s in _strings(accel) if s.startswith("/")]
    if decode_gemm.library_path() is not None:
        assert accel["blas"]["observed"]["sgemm_resolves_to"].startswith("accel/_skinny_gemm")
        assert accel["decode_gemm"]["observed"]["calls_taken"] >= 1
    if cpu_kernels.plan().flags:
        assert accel["cpu_kernels"]["observed"]["loaded_from_mlxk_folder"] >= 1
        assert accel["cpu_ops"]["observed"]["replaced"] == ["mx.logsumexp"]


def test_version_gives_the_plan_without_loading_mlx():
    out = _run("""
        import contextlib, io, json, sys
        from mlxk.cli.main import main
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            main(["--version"])
        print(json.dumps({"text": buf.getvalue(), "mlx": "mlx.core" in sys.modules,
                          "blas_loaded": any("openblas" in l for l in open("/proc/self/maps"))}))
    """)
    assert out["mlx"] is False and out["blas_loaded"] is False
    assert "BLAS:" in out["text"] and "planned; mlx is not loaded by this command" in out["text"]


@linux_openblas
def test_the_server_log_has_the_observed_report(serve_model_dir, tmp_path):
    from tests.serve_fixture import ServerProc

    srv = ServerProc(serve_model_dir, tmp_path).wait_ready()
    try:
        log = srv.log()
    finally:
        srv.stop()
    assert "BLAS: OpenBLAS (" in log
    if decode_gemm.library_path() is not None:
        assert re.search(r"decode GEMM: mlxk's few-row cblas_sgemm, \d+ calls taken", log)
    assert "planned; mlx is not loaded" not in log
