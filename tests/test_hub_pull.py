"""pull against the test Hub over real HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cachebuilder import mlx_chat_files
from tests.hub_fixture import run_json


def snapshot_files(hf_home: Path, repo_id: str, commit: str) -> dict[str, bytes]:
    root = hf_home / "hub" / ("models--" + repo_id.replace("/", "--")) / "snapshots" / commit
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_pull_main_then_already_exists(hub, isolated_hf_home):
    hub.add_repo("mlx-community/Tiny-4bit", mlx_chat_files())
    payload, rc = run_json("pull", "Tiny-4bit")
    assert rc == 0, payload
    d = payload["data"]
    assert d["download_status"] == "success" and d["model"] == "mlx-community/Tiny-4bit"
    assert d["expanded_name"] == "mlx-community/Tiny-4bit"
    commit = hub.repos["mlx-community/Tiny-4bit"].branches["main"]
    assert snapshot_files(isolated_hf_home, "mlx-community/Tiny-4bit", commit) == hub.files("mlx-community/Tiny-4bit")
    assert d["model_info"]["health"] == "healthy"
    payload, rc = run_json("pull", "mlx-community/Tiny-4bit")
    assert rc == 0 and payload["data"]["download_status"] == "already_exists"
    assert payload["data"]["expanded_name"] is None


@pytest.mark.parametrize("how", ["branch", "tag", "prefix"])
def test_pull_revision_is_really_used(hub, isolated_hf_home, how):
    repo = hub.add_repo("org/rev-model", mlx_chat_files())
    first = repo.branches["main"]
    hub.commit("org/rev-model", "main", {"extra.txt": b"newer"})
    if how == "branch":
        repo.branches["old"] = first
        rev = "old"
    elif how == "tag":
        repo.tags["v1.0"] = first
        rev = "v1.0"
    else:
        rev = first[:8]
    payload, rc = run_json("pull", f"org/rev-model@{rev}")
    assert rc == 0, payload
    assert payload["data"]["commit"] == first
    got = snapshot_files(isolated_hf_home, "org/rev-model", first)
    assert got == hub.files("org/rev-model", first) and "extra.txt" not in got


def test_pull_errors(hub):
    hub.add_repo("org/gated", mlx_chat_files(), gated=True)
    hub.add_repo("org/private", mlx_chat_files(), private=True)
    hub.add_repo("org/public", mlx_chat_files())
    p, rc = run_json("pull", "org/gated")
    assert rc == 2 and p["error"]["type"] == "access_denied" and "HF_TOKEN" in p["error"]["message"]
    p, rc = run_json("pull", "org/private", env={"HF_TOKEN": ""})
    assert rc == 2 and p["error"]["type"] == "access_denied"
    p, rc = run_json("pull", "org/missing")
    assert rc == 2 and p["error"]["type"] == "download_failed" and p["data"]["download_status"] == "failed"
    p, rc = run_json("pull", "org/public@nope")
    assert rc == 2 and p["error"]["type"] == "download_failed" and "nope" in p["error"]["message"]
    p, rc = run_json("pull", "x" * 100)
    assert rc == 1 and p["error"]["type"] == "ValidationError" and p["data"]["download_status"] == "error"
    # private with the token works
    p, rc = run_json("pull", "org/private")
    assert rc == 0 and p["data"]["download_status"] == "success"


def test_pull_unreachable_is_network_error(isolated_hf_home):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_OFFLINE": "0", "HF_HUB_ETAG_TIMEOUT": "2"}
    p, rc = run_json("pull", "org/any", env=env)
    assert rc == 2 and p["error"]["type"] == "NetworkError", p


def test_check_disk_refuses(tmp_path, monkeypatch):
    import shutil

    from mlxk.contract import MlxkError
    from mlxk.hub.pull import check_disk

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(MlxkError) as ei:
        check_disk(10**6, tmp_path / "not" / "there")
    assert ei.value.type == "FilesystemError" and "disk space" in ei.value.message


def test_interrupted_download_is_unhealthy_and_force_repairs(hub, isolated_hf_home):
    files = mlx_chat_files()
    files["model.safetensors"] = os.urandom(4 * 1024 * 1024)
    hub.add_repo("org/big", files)
    hub.throttle["model.safetensors"] = 0.1  # 64 KiB per 100 ms: ~6 s for the file
    proc = subprocess.Popen([sys.executable, "-m", "mlxk", "pull", "org/big", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
    blobs = isolated_hf_home / "hub" / "models--org--big" / "blobs"
    deadline = time.time() + 120  # a loaded CI machine can take long to start the client
    while time.time() < deadline:
        partial = list(blobs.glob("*.incomplete")) if blobs.is_dir() else []
        if partial:  # the client buffers up to 10 MB before writing: being open is "mid-file"
            time.sleep(0.5)
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert list(blobs.glob("*.incomplete")), "the kill should leave a partial blob"
    hub.throttle.clear()

    p, rc = run_json("health", "org/big")
    assert [m["name"] for m in p["data"]["unhealthy"]] == ["org/big"]
    p, rc = run_json("pull", "org/big")
    assert (rc, p["error"]["type"]) == (1, "unhealthy") and "--force" in p["error"]["message"]
    p, rc = run_json("pull", "org/big", "--force")
    assert rc == 0, p
    assert not list(blobs.glob("*.incomplete"))
    commit = hub.repos["org/big"].branches["main"]
    assert snapshot_files(isolated_hf_home, "org/big", commit) == hub.files("org/big")
    p, rc = run_json("health", "org/big")
    assert p["data"]["healthy"] == [{"name": "org/big", "status": "healthy", "reason": "Model is healthy"}]


def test_pull_json_stdout_is_only_the_envelope(hub):
    hub.add_repo("org/quiet", mlx_chat_files())
    from tests.conftest import run_cli

    proc = run_cli("pull", "org/quiet", "--json")
    import json

    assert json.loads(proc.stdout)["status"] == "success"


def test_ctrl_c_stops_promptly_with_cancelled_envelope(hub, isolated_hf_home):
    import json

    files = mlx_chat_files()
    files["model.safetensors"] = os.urandom(2 * 1024 * 1024)
    hub.add_repo("org/slow", files)
    hub.throttle["model.safetensors"] = 0.2  # ~6 s for the file
    proc = subprocess.Popen([sys.executable, "-m", "mlxk", "pull", "org/slow", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    blobs = isolated_hf_home / "hub" / "models--org--slow" / "blobs"
    deadline = time.time() + 30
    while time.time() < deadline and not (blobs.is_dir() and list(blobs.glob("*.incomplete"))):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    payload = json.loads(out)
    assert proc.returncode == 130 and payload["error"]["type"] == "cancelled"
    assert "--force" in payload["error"]["message"]
    # stopped mid-file, not after it: the throttled file (~6 s) is still partial, no snapshot has it
    assert list(blobs.glob("*.incomplete"))
    assert not list((blobs.parent / "snapshots").glob("*/model.safetensors"))
    hub.throttle.clear()
    p, rc = run_json("pull", "org/slow", "--force")
    assert rc == 0 and p["data"]["download_status"] == "success"


def test_gated_with_access_pulls(hub):
    hub.add_repo("org/gated-ok", mlx_chat_files(), gated=True)
    hub.granted.add("org/gated-ok")
    p, rc = run_json("pull", "org/gated-ok")
    assert rc == 0 and p["data"]["download_status"] == "success"


def test_test_hub_records_unimplemented_routes(hub):
    import httpx2

    r = httpx2.get(os.environ["HF_ENDPOINT"] + "/api/whoami-v2")
    assert r.status_code == 501 and hub.unimplemented == ["GET /api/whoami-v2?"]
    hub.unimplemented.clear()  # this test called it on purpose


def test_progress_bar_on_a_terminal_only(hub):
    import fcntl
    import pty
    import struct
    import termios

    hub.add_repo("org/tty", mlx_chat_files())
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    proc = subprocess.Popen([sys.executable, "-m", "mlxk", "pull", "org/tty"], stdin=slave, stdout=slave,
                            stderr=slave, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=30)
    os.close(master)
    text = out.decode(errors="replace")
    assert proc.returncode == 0
    assert "Fetching 7 files" in text and "Successfully downloaded model org/tty" in text
