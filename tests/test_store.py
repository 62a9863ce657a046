"""The model store: cache location, scan, name resolution, snapshot selection."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mlxk.contract import MlxkError
from mlxk.store.cache import hub_cache_dir, scan
from mlxk.store.names import resolve
from tests.cachebuilder import mlx_chat_files, safetensors_bytes


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"HF_HOME": "/tmp/x-home"},
        {"HF_HUB_CACHE": "/tmp/x-hub"},
        {"HF_HOME": "/tmp/x-home", "HF_HUB_CACHE": "/tmp/x-hub"},
        {"HUGGINGFACE_HUB_CACHE": "/tmp/legacy"},
        {"XDG_CACHE_HOME": "/tmp/xdg"},
        {"HF_HOME": "~/hfhome"},
    ],
)
def test_cache_location_follows_huggingface_hub(env):
    clean = {k: v for k, v in os.environ.items() if k not in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME")}
    clean.update(env)
    code = (
        "import json; from huggingface_hub import constants; from mlxk.store.cache import hub_cache_dir;"
        "print(json.dumps([constants.HF_HUB_CACHE, str(hub_cache_dir())]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean, check=True)
    theirs, ours = json.loads(out.stdout)
    assert ours == theirs


def test_scan_lists_models_only_and_skips_datasets(cache, hub_cache):
    cache.add("org/model-a", mlx_chat_files())
    (hub_cache / "datasets--org--data" / "snapshots").mkdir(parents=True)
    names = [r.repo_id for r in scan()]
    assert names == ["org/model-a"]
    assert hub_cache_dir() == hub_cache


def test_corrupted_repo_is_still_listed(cache):
    commit = cache.add("org/broken", mlx_chat_files())
    blob = (cache.snapshot("org/broken", commit) / "model.safetensors").resolve()
    blob.unlink()
    repos = {r.repo_id: r for r in scan()}
    assert "org/broken" in repos
    assert repos["org/broken"].scan_problem == f"Blob missing (broken symlink): {blob}"
    assert repos["org/broken"].snapshots[0].commit == commit


def test_resolution_order(cache):
    cache.add("mlx-community/Phi-3-mini", mlx_chat_files())
    cache.add("other/Phi-3-mini", mlx_chat_files())
    cache.add("org/Llama-3.2-1B", mlx_chat_files())
    cache.add("org/Llama-3.2-3B", mlx_chat_files())
    # bare name expands to mlx-community/
    assert resolve("Phi-3-mini").name == "mlx-community/Phi-3-mini"
    # exact org/name wins over substring
    assert resolve("other/Phi-3-mini").name == "other/Phi-3-mini"
    # case-insensitive substring
    assert resolve("llama-3.2-1b").name == "org/Llama-3.2-1B"
    with pytest.raises(MlxkError) as err:
        resolve("Llama")
    assert err.value.type == "ambiguous_match"
    assert err.value.extra["matches"] == ["org/Llama-3.2-1B", "org/Llama-3.2-3B"]
    with pytest.raises(MlxkError) as err:
        resolve("nothing-like-this")
    assert err.value.type == "model_not_found"


def test_hash_pin_selects_snapshot(cache):
    old = cache.add("org/m", mlx_chat_files(), commit="a" * 40, ref=None)
    new = cache.add("org/m", {**mlx_chat_files(), "extra.txt": b"x"}, commit="b" * 40)
    assert resolve("org/m").commit == new  # refs/main
    assert resolve("org/m@aaaa").commit == old
    with pytest.raises(MlxkError) as err:
        resolve("org/m@cccc")
    assert err.value.type == "model_not_found"
    assert err.value.extra["available_hashes"] == ["aaaaaaaa", "bbbbbbbb"]
    with pytest.raises(MlxkError) as err:
        resolve("org/m@xyz")
    assert err.value.type == "ValidationError"


def test_newest_snapshot_without_refs_main(cache):
    older = {name: content + b"\n" for name, content in mlx_chat_files().items()}  # no blob shared with the newer one
    older["model.safetensors"] = safetensors_bytes({"w": np.ones((2, 2), dtype=np.float32)})
    cache.add("org/m", older, commit="a" * 40, ref=None, mtime=1_000_000)
    cache.add("org/m", mlx_chat_files(), commit="b" * 40, ref=None, mtime=2_000_000)
    assert resolve("org/m").commit == "b" * 40


@pytest.mark.parametrize(
    "bad,fragment",
    [("a" * 97, "too long: 97/96"), ("org/na me", "Invalid model name"), ("org/a--b", "Invalid"), ("", "empty")],
)
def test_name_validation(bad, fragment):
    with pytest.raises(MlxkError) as err:
        resolve(bad)
    assert err.value.type == "ValidationError"
    assert fragment in err.value.message


def test_workspace_paths(tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.chdir(tmp_path)
    ref = resolve("./ws")
    assert (ref.name, ref.cached, ref.path.resolve(), ref.typed) == (str(ws), False, ws.resolve(), "./ws")
    assert resolve(str(ws)).name == str(ws)
    # spec 0.1.7: a workspace's name is its full path, whatever relative form was typed
    (tmp_path / "x").mkdir()
    monkeypatch.chdir(tmp_path / "x")
    assert [resolve(s).name for s in ("../ws", "../ws/", "../x/../ws", "./../ws")] == [str(ws)] * 4
    monkeypatch.chdir(tmp_path)
    assert resolve("ws/").name == str(ws)  # a trailing slash makes it a path: no Hub name ends with one
    monkeypatch.chdir(ws)
    assert resolve(".").name == str(ws)
    with pytest.raises(MlxkError) as err:
        resolve("./missing")
    assert err.value.type == "model_not_found"
