"""push against the test Hub; every upload is checked by pulling it back byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cachebuilder import mlx_chat_files
from tests.hub_fixture import run_json


def make_ws(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def pulled(hf_home: Path, repo_id: str, rev: str, hub) -> dict[str, bytes]:
    p, rc = run_json("pull", f"{repo_id}@{rev}", "--force")
    assert rc == 0, p
    commit = p["data"]["commit"]
    root = hf_home / "hub" / ("models--" + repo_id.replace("/", "--")) / "snapshots" / commit
    return {str(f.relative_to(root)): f.read_bytes() for f in root.rglob("*") if f.is_file()}


def test_push_create_update_nochange_dryrun(hub, isolated_hf_home, tmp_path):
    files = mlx_chat_files()
    ws = make_ws(tmp_path / "ws", {**files, ".git/HEAD": b"ref", "__pycache__/x.pyc": b"c", "notes.tmp": b"n",
                                   ".hfignore": b"*.tmp\n"})
    p, rc = run_json("push", str(ws), "org/new", "--private")
    assert rc == 2 and p["error"]["type"] == "push_failed" and "--create" in p["error"]["message"]
    p, rc = run_json("push", str(ws), "org/new", "--private", "--create", "--commit", "first")
    assert rc == 0, p
    d = p["data"]
    assert d["created_repo"] and d["no_changes"] is False and d["commit_sha"] and d["uploaded_files_count"] == 7
    assert hub.repos["org/new"].private
    expected = {**files, ".hfignore": b"*.tmp\n"}
    got = pulled(isolated_hf_home, "org/new", "main", hub)
    got.pop(".gitattributes")
    assert got == expected

    # no change: no commit
    head = hub.repos["org/new"].branches["main"]
    p, rc = run_json("push", str(ws), "org/new", "--private")
    assert rc == 0 and p["data"]["no_changes"] is True and p["data"]["commit_sha"] is None
    assert hub.repos["org/new"].branches["main"] == head

    # dry run: reports, uploads nothing
    (ws / "README.md").write_bytes(b"---\ntags:\n- mlx\n---\nchanged\n")
    (ws / "added.txt").write_bytes(b"new")
    (ws / "special_tokens_map.json").unlink()
    p, rc = run_json("push", str(ws), "org/new", "--private", "--dry-run")
    assert rc == 0, p
    d = p["data"]
    assert (d["added"], d["modified"], d["deleted"]) == (["added.txt"], ["README.md"], ["special_tokens_map.json"])
    assert d["change_summary"] == {"added": 1, "modified": 1, "deleted": 1}
    assert hub.repos["org/new"].branches["main"] == head

    # the update itself
    p, rc = run_json("push", str(ws), "org/new", "--private")
    assert rc == 0 and p["data"]["change_summary"] == {"added": 1, "modified": 1, "deleted": 1}
    got = pulled(isolated_hf_home, "org/new", "main", hub)
    got.pop(".gitattributes")
    local = {str(f.relative_to(ws)): f.read_bytes() for f in ws.rglob("*") if f.is_file()
             and not str(f.relative_to(ws)).startswith((".git/", "__pycache__/")) and f.name != "notes.tmp"}
    assert got == local


def test_push_branch(hub, isolated_hf_home, tmp_path):
    hub.add_repo("org/b", mlx_chat_files())
    main_head = hub.repos["org/b"].branches["main"]
    ws = make_ws(tmp_path / "ws", {**mlx_chat_files(), "extra.json": b"{}"})
    p, rc = run_json("push", str(ws), "org/b", "--private", "--branch", "dev")
    assert rc == 0, p
    assert p["data"]["branch"] == "dev" and p["data"]["change_summary"]["added"] == 1
    assert hub.repos["org/b"].branches["main"] == main_head
    got = pulled(isolated_hf_home, "org/b", "dev", hub)
    assert got["extra.json"] == b"{}" and got["config.json"] == mlx_chat_files()["config.json"]


def test_push_check_only_and_refusals(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    ws = make_ws(tmp_path / "ws", mlx_chat_files())
    p, rc = run_json("push", str(ws), "org/x", "--check-only")  # offline, no token
    assert rc == 0, p
    h = p["data"]["workspace_health"]
    assert h["healthy"] and h["config"]["exists"] and h["weights"]["formats"] == ["safetensors"]
    assert p["data"]["no_changes"] is None
    (ws / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-00002-of-00002.safetensors"}}))
    p, rc = run_json("push", str(ws), "org/x", "--check-only")
    h = p["data"]["workspace_health"]
    assert not h["healthy"] and h["weights"]["index"]["missing"] == ["model-00002-of-00002.safetensors"]
    assert h["anomalies"]
    p, rc = run_json("push", str(ws), "org/x")
    assert rc == 1 and "--private" in p["error"]["message"]
    p, rc = run_json("push", str(ws), "org/x", "--private")
    assert (rc, p["error"]["type"]) == (2, "auth_error")
    assert p["error"]["message"] == "No Hugging Face token: set HF_TOKEN or run `hf auth login`"
    p, rc = run_json("push", str(tmp_path / "nope"), "org/x", "--private")
    assert rc == 1 and p["error"]["type"] == "ValidationError"


def test_push_uses_the_token_hf_auth_login_stored(hub, isolated_hf_home, tmp_path, monkeypatch):
    """No HF_TOKEN: the token file `hf auth login` writes ($HF_HOME/token) is used, as huggingface_hub does."""
    monkeypatch.delenv("HF_TOKEN")
    ws = make_ws(tmp_path / "ws", mlx_chat_files())
    (isolated_hf_home / "token").write_text("wrong-token")
    p, rc = run_json("push", str(ws), "org/by-login", "--private", "--create")
    assert (rc, p["error"]["type"]) == (2, "access_denied"), p  # the stored token was sent, and refused
    (isolated_hf_home / "token").write_text(hub.token)
    p, rc = run_json("push", str(ws), "org/by-login", "--private", "--create")
    assert rc == 0, p
    assert p["data"]["created_repo"] is True and p["data"]["uploaded_files_count"] == len(mlx_chat_files())
    assert "org/by-login" in hub.repos
