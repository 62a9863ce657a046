"""The engine survives a failing step: the requests in it end with an error, the next works."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO_ROOT


def _run(scenario: str, model_dir) -> dict:
    proc = subprocess.run([sys.executable, "-m", "tests.engine_faults", scenario, str(model_dir)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_failed_step_ends_its_requests_and_the_next_request_works(demo_model_dir):
    out = _run("step", demo_model_dir)
    assert [r["end"] for r in out["first"]] == ["error", "error"], out
    assert {r["code"] for r in out["first"]} == {"engine_error"}, out
    assert out["after"]["end"] == "finish" and "delta" in out["after"]["kinds"], out
    assert out["active"] == 0 and out["state"] == "ready", out


def test_a_sequence_that_fails_ends_alone_and_the_others_finish(demo_model_dir):
    out = _run("sequence", demo_model_dir)
    a, b = out["first"]
    assert a["end"] == "finish" and a["code"] in ("length", "stop"), out
    assert b["end"] == "error" and b["code"] == "generation_failed", out
    assert out["after"]["end"] == "finish", out
    assert out["active"] == 0, out


def test_an_incompatible_mlx_lm_fails_the_load_with_both_versions_named(demo_model_dir):
    from importlib import metadata

    from mlxk.engine.compat import VERIFIED

    out = _run("load", demo_model_dir)
    assert out["state"] == "failed", out  # never left at "loading"
    assert f"mlx-lm {metadata.version('mlx-lm')} is installed, mlxk serve needs mlx-lm{VERIFIED}" in out["error"]
    assert "insert_segments(" in out["error"], out
    assert out["request"]["end"] == "error" and out["request"]["code"] == "model_load_failed", out


def test_the_installed_mlx_lm_passes_the_check():
    from mlxk.engine.compat import check_mlx_lm

    check_mlx_lm()
