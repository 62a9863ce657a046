"""`mlxk doctor` and the speed-up lines of `mlxk --version`: what mlxk.accel has in use."""

from __future__ import annotations

from tests.conftest import run_cli, run_json

PIECES = ("blas", "decode_gemm", "cpu_kernels", "cpu_ops")


def test_doctor_json_reports_runtime():
    payload, rc = run_json("doctor")
    assert rc == 0
    d = payload["data"]
    assert d["mlx_version"] and d["mlx_lm_version"]
    assert d["device"]  # e.g. Device(cpu, 0)
    assert d["memory_total_bytes"] > 0
    accel = d["accel"]
    assert accel["mlx_version"] == d["mlx_version"] and accel["mlx_loaded"] is True
    for name in PIECES:
        piece = accel[name]
        assert set(piece) == {"on", "summary", "reason", "verified_mlx", "observed"}
        assert piece["verified_mlx"] and piece["on"] in (True, False)  # doctor probes: nothing left unseen
    from mlxk.accel import blas, decode_gemm

    # the decode GEMM is in use exactly when OpenBLAS is found and the extension was built
    assert accel["decode_gemm"]["on"] is (blas.find() is not None and decode_gemm.library_path() is not None)
    if accel["decode_gemm"]["on"]:
        assert accel["decode_gemm"]["observed"]["calls_taken"] >= 1  # MLX called it: observed, not planned
        assert accel["blas"]["observed"]["decode_gemm_hands_on_to"] == accel["blas"]["observed"]["mlx_uses"]
    assert "/" not in str(accel["blas"]["observed"].get("mapped", [""])[0])[:1]  # no absolute paths
    off, _ = run_json("doctor", env={"MLXK_DECODE_GEMM": "off"})
    gemm = off["data"]["accel"]["decode_gemm"]
    assert (gemm["on"], gemm["reason"]) == (False, "MLXK_DECODE_GEMM=off")
    if accel["blas"]["on"]:  # OpenBLAS alone then: the global cblas_sgemm is OpenBLAS's
        observed = off["data"]["accel"]["blas"]["observed"]
        assert observed["sgemm_resolves_to"] == observed["mlx_uses"] and "openblas" in observed["mlx_uses"].lower()


def test_doctor_with_blas_off_names_the_fallback():
    payload, rc = run_json("doctor", env={"MLXK_BLAS": "off"})
    assert rc == 0
    accel = payload["data"]["accel"]
    assert accel["blas"]["on"] is False
    assert accel["blas"]["summary"].startswith(("bundled reference BLAS", "Accelerate"))
    assert accel["decode_gemm"]["on"] is False  # it only sits in front of OpenBLAS


def test_version_human_has_the_planned_speed_ups_json_does_not():
    proc = run_cli("--version")
    assert proc.returncode == 0 and "BLAS:" in proc.stdout
    assert "planned; mlx is not loaded by this command" in proc.stdout
    payload, _ = run_json("--version")
    assert "blas" not in str(payload["data"].get("system", {})).lower()
