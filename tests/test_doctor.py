"""`mlxk doctor` and the BLAS line of `mlxk --version`."""

from __future__ import annotations

from tests.conftest import run_cli, run_json


def test_doctor_json_reports_runtime():
    payload, rc = run_json("doctor")
    assert rc == 0
    d = payload["data"]
    assert d["mlx_version"] and d["mlx_lm_version"]
    assert d["device"]  # e.g. Device(cpu, 0)
    assert d["blas"]["name"] in ("OpenBLAS", "bundled reference BLAS", "Accelerate")
    assert d["memory_total_bytes"] > 0
    from mlxk.engine import blas

    # the decode GEMM is reported exactly when OpenBLAS is used and the extension was built
    assert d["blas"]["decode_gemm"] is (d["blas"]["name"] == "OpenBLAS" and blas.skinny_path() is not None)
    from mlxk.engine import cpu_kernels

    assert d["cpu_kernels"]["flags"] == list(cpu_kernels.describe().flags)
    off, _ = run_json("doctor", env={"MLXK_DECODE_GEMM": "off"})
    assert off["data"]["blas"]["decode_gemm"] is False


def test_doctor_with_blas_off_names_the_fallback():
    payload, rc = run_json("doctor", env={"MLXK_BLAS": "off"})
    assert rc == 0
    assert payload["data"]["blas"]["name"] in ("bundled reference BLAS", "Accelerate")
    assert payload["data"]["blas"]["decode_gemm"] is False  # it only sits in front of OpenBLAS


def test_version_human_has_blas_line_json_does_not():
    proc = run_cli("--version")
    assert proc.returncode == 0 and "BLAS:" in proc.stdout
    payload, _ = run_json("--version")
    assert "blas" not in str(payload["data"].get("system", {})).lower()
