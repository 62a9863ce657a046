"""clone: cache → workspace, against the test Hub when the model must be pulled first."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.cachebuilder import mlx_chat_files
from tests.hub_fixture import run_json


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): (f"link:{p.readlink()}" if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file() or p.is_symlink()}


def test_clone_pulls_then_copies_and_leaves_cache_untouched(hub, isolated_hf_home, tmp_path):
    hub.add_repo("mlx-community/Clone-4bit", mlx_chat_files())
    target = tmp_path / "ws"
    p, rc = run_json("clone", "Clone-4bit", str(target))
    assert rc == 0, p
    d = p["data"]
    assert d["clone_status"] == "success" and d["model"] == "mlx-community/Clone-4bit"
    assert d["expanded_name"] == "mlx-community/Clone-4bit" and d["health"] == "healthy" and d["health_check"] is True
    files = {str(f.relative_to(target)): f.read_bytes() for f in target.rglob("*") if f.is_file()}
    sentinel = json.loads(files.pop(".mlxk-clone.json"))
    assert files == hub.files("mlx-community/Clone-4bit")
    commit = hub.repos["mlx-community/Clone-4bit"].branches["main"]
    assert sentinel["source_repo"] == "mlx-community/Clone-4bit" and sentinel["source_commit"] == commit
    assert not any(f.is_symlink() for f in target.rglob("*"))

    # second clone from the cache only (offline), cache byte-for-byte unchanged
    before = tree_digest(isolated_hf_home / "hub")
    p, rc = run_json("clone", "mlx-community/Clone-4bit", str(tmp_path / "ws2"), env={"HF_HUB_OFFLINE": "1"})
    assert rc == 0 and p["data"]["commit"] == commit
    assert tree_digest(isolated_hf_home / "hub") == before
    # the workspace works where a model name does
    p, rc = run_json("health", str(target))
    assert rc == 0 and p["data"]["healthy"] == [{"name": str(target), "status": "healthy", "reason": "Model is healthy"}]


def test_clone_refusals(hub, cache, tmp_path):
    cache.add("org/cached", mlx_chat_files())
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    p, rc = run_json("clone", "org/cached", str(full))
    assert rc == 1 and p["error"]["type"] == "ValidationError" and "not empty" in p["error"]["message"]
    assert p["data"]["clone_status"] == "error" and (full / "keep.txt").read_text() == "mine"
    afile = tmp_path / "afile"
    afile.write_text("x")
    p, rc = run_json("clone", "org/cached", str(afile))
    assert rc == 1 and p["error"]["type"] == "ValidationError"
    p, rc = run_json("clone", "org/not-there", str(tmp_path / "x"))
    assert rc == 2 and p["error"]["type"] == "clone_failed" and p["data"]["clone_status"] == "failed"
    assert not (tmp_path / "x").exists()
    hub.add_repo("org/gated", mlx_chat_files(), gated=True)
    p, rc = run_json("clone", "org/gated", str(tmp_path / "g"))
    assert rc == 2 and p["error"]["type"] == "access_denied" and p["data"]["clone_status"] == "access_denied"
    # an empty existing target is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    p, rc = run_json("clone", "org/cached", str(empty))
    assert rc == 0 and (empty / "config.json").is_file()
    assert not [q for q in tmp_path.iterdir() if q.name.startswith(".")]
