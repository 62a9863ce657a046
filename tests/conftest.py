"""Test isolation: every test gets its own HF_HOME; the user's cache is never touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cachebuilder import CacheBuilder

# Area fixtures live in their own modules so each area can grow without touching this file.
pytest_plugins = ["tests.model_fixture", "tests.real_models", "tests.hub_fixture", "tests.serve_fixture"]

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def session_mlxk_cache(tmp_path_factory) -> Path:
    """mlxk's own cache for the whole run: CPU kernels built once, never in the user's ~/.cache."""
    return tmp_path_factory.mktemp("mlxk_cache")


@pytest.fixture(autouse=True)
def isolated_hf_home(tmp_path_factory, monkeypatch, session_mlxk_cache):
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("MLXK_CACHE_DIR", str(session_mlxk_cache))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    return home


@pytest.fixture
def hub_cache(isolated_hf_home) -> Path:
    path = isolated_hf_home / "hub"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def cache(hub_cache) -> CacheBuilder:
    return CacheBuilder(hub_cache)


def run_cli(*args: str, input: str | None = None, env: dict | None = None, cwd: Path | None = None, timeout: float = 120):
    """Run the real command in a subprocess (the isolated HF_HOME is inherited)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "mlxk", *args],
        capture_output=True,
        text=True,
        input=input,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )


def run_json(*args: str, **kw):
    """Run with --json, validate the envelope against the contract models, return (payload, rc)."""
    from mlxk.contract.models import validate_envelope

    proc = run_cli(*args, "--json", **kw)
    try:
        payload = json.loads(proc.stdout)
    except ValueError as exc:  # pragma: no cover - shows the failure
        raise AssertionError(f"not JSON on stdout (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from exc
    validate_envelope(payload)
    return payload, proc.returncode
