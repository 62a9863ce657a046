"""``mlxk deploy`` with the process backend, for real: the demo model, real processes, real HTTP.

Every test runs in its own MLXK_DEPLOY_DIR; the ``deploy_root`` fixture uninstalls everything
at teardown and then kills any process a deployment recorded that is still alive.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from mlxk.deploy.backend_process import descendants
from tests.conftest import run_json
from tests.serve_fixture import free_port


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _recorded_pids(root: Path) -> set[int]:
    pids: set[int] = set()
    for run in root.glob("*/run.json"):
        pid = json.loads(run.read_text()).get("pid")
        if isinstance(pid, int):
            pids.add(pid)
    return pids


@pytest.fixture
def deploy_root(tmp_path, monkeypatch):
    root = tmp_path / "deploy"
    monkeypatch.setenv("MLXK_DEPLOY_DIR", str(root))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    seen: set[int] = set()
    yield root, seen
    seen |= _recorded_pids(root)
    for pid in list(seen):
        seen |= set(descendants(pid)) if _alive(pid) else set()
    run_json("deploy", "uninstall-all")
    for pid in seen:  # the finalizer of last resort: nothing a test started outlives it
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


def _ok(*args: str) -> dict:
    payload, rc = run_json("deploy", *args)
    assert rc == 0, payload
    return payload["data"]


def _wait(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _chat(port: int) -> str:
    r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=120,
                   json={"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def _refused(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    except httpx.ConnectError:
        return True
    return False


def test_two_deployments_lifecycle(deploy_root, demo_model_in_cache, demo_model_dir):
    """create → install --start → running and healthy → a chat through each → logs → restart →
    stop-all → start-all → a kill by hand is 'failed' → uninstall-all leaves no processes, no files."""
    root, seen = deploy_root
    pa, pb = _ports(2)
    _ok("create", "a", "--model", demo_model_in_cache, "--port", str(pa), "--temp", "0", "--top-k", "20",
        "--max-tokens", "64")
    _ok("create", "b", "--model", str(demo_model_dir), "--port", str(pb))
    for name in ("a", "b"):
        assert _ok("install", name, "--start", "--backend", "process")["state"] == "running"
    seen |= _recorded_pids(root)
    for name in ("a", "b"):
        assert _ok("watch", name)["ready"] is True

    st = _ok("status", "a")
    assert (st["state"], st["backend"], st["port"], st["ready"]) == ("running", "process", pa, True)
    assert st["health"]["status"] == "ok" and st["model"] == demo_model_in_cache
    assert isinstance(st["pid"], int) and st["uptime"] >= 0
    assert (root / "a" / "server.pid").read_text().strip() == str(st["pid"])
    assert _ok("status", "b")["model"] == demo_model_dir.name  # a folder by its name: no absolute path in JSON

    # config → serve flags → the server process's own arguments
    workers = descendants(st["pid"])
    seen |= set(workers)
    argv = "\0".join(Path(f"/proc/{w}/cmdline").read_text() for w in workers).split("\0")
    for flag, value in (("--temp", "0.0"), ("--top-k", "20"), ("--default-max-tokens", "64")):
        assert argv[argv.index(flag) + 1] == value, argv

    for port in (pa, pb):
        assert isinstance(_chat(port), str)
    lines = _ok("logs", "a", "--lines", "200")["lines"]
    assert any("starting 'a': mlxk serve" in ln for ln in lines)
    assert any("loaded" in ln for ln in lines)
    assert any("request model=" in ln for ln in lines), lines[-20:]  # the chat above is in the log

    old = st["pid"]
    assert _ok("restart", "a")["state"] == "running"
    seen |= _recorded_pids(root)
    assert _ok("watch", "a")["ready"] and _ok("status", "a")["pid"] != old
    _wait(lambda: not _alive(old), "the old process to end")

    before = _recorded_pids(root)
    family = before | {p for pid in before for p in descendants(pid)}
    seen |= family
    results = _ok("stop-all")["results"]
    assert [(r["name"], r["ok"]) for r in results] == [("a", True), ("b", True)]
    assert {_ok("status", n)["state"] for n in ("a", "b")} == {"stopped"}
    assert not any(_alive(p) for p in family)
    assert _refused(pa) and _refused(pb)

    _ok("start-all")
    seen |= _recorded_pids(root)
    for name in ("a", "b"):
        assert _ok("watch", name)["ready"] is True
    assert isinstance(_chat(pb), str)

    victim = _ok("status", "b")["pid"]
    seen |= set(descendants(victim))
    os.kill(victim, signal.SIGKILL)
    _wait(lambda: not _alive(victim), "the killed process to go")
    st = _ok("status", "b")
    assert st["state"] == "failed", st
    assert str(victim) in st["reason"] and "not running" in st["reason"]
    payload, rc = run_json("deploy", "watch", "b")
    assert rc == 1 and payload["error"]["state"] == "failed"
    _wait(lambda: _refused(pb), "the killed deployment's server to free its port")  # no orphan server

    seen |= _recorded_pids(root) | {p for pid in _recorded_pids(root) for p in descendants(pid)}
    assert [r["ok"] for r in _ok("uninstall-all")["results"]] == [True, True]
    for name in ("a", "b"):
        assert _ok("status", name)["state"] == "not_installed"
        assert sorted(p.name for p in (root / name).iterdir()) == ["config.json", "logs"]
    _wait(lambda: not any(_alive(p) for p in seen), "every deployment process to end", timeout=30)
    assert _refused(pa) and _refused(pb)


def _broken_model(tmp_path: Path, demo_model_dir: Path) -> Path:
    """The demo model's files with a config whose shapes do not match the weights."""
    folder = tmp_path / "broken-model"
    folder.mkdir()
    for f in demo_model_dir.iterdir():
        if f.name != "config.json":
            (folder / f.name).symlink_to(f.resolve())
    cfg = json.loads((demo_model_dir / "config.json").read_text())
    cfg["hidden_size"] *= 2
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def test_model_that_fails_to_load_reports_failed(deploy_root, tmp_path, demo_model_dir):
    root, seen = deploy_root
    model = _broken_model(tmp_path, demo_model_dir)
    _ok("create", "broken", "--model", str(model), "--port", str(free_port()))
    _ok("install", "broken", "--start", "--backend", "process")
    seen |= _recorded_pids(root)
    payload, rc = run_json("deploy", "watch", "broken")
    assert rc == 1, payload
    assert payload["error"]["state"] == "failed" and "Expected shape" in payload["error"]["message"]
    st = _ok("status", "broken")
    assert st["state"] == "failed" and "Expected shape" in st["reason"], st
    assert st["health"]["status"] == "failed"
    _ok("stop", "broken")
    assert _ok("status", "broken")["state"] == "stopped"


def test_hub_model_that_cannot_be_pulled_reports_failed(deploy_root):
    """org/name not in the cache is pulled on first start; offline, the pull fails and says why."""
    root, seen = deploy_root
    _ok("create", "hub", "--model", "some-org/not-cached-model", "--port", str(free_port()))
    _ok("install", "hub", "--start", "--backend", "process")
    seen |= _recorded_pids(root)
    payload, rc = run_json("deploy", "watch", "hub")
    assert rc == 1, payload
    st = _ok("status", "hub")
    assert st["state"] == "failed"
    assert "pulling some-org/not-cached-model failed" in st["reason"] and "HF_HUB_OFFLINE" in st["reason"]
    assert any("pulling some-org/not-cached-model from the Hugging Face Hub" in ln for ln in st["log_tail"])


def _snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size, p.read_bytes() if p.is_file() else b"")
            for p in sorted(folder.rglob("*"))}


def test_commands_on_one_deployment_leave_the_others_files_alone(deploy_root, demo_model_dir):
    root, seen = deploy_root
    _ok("create", "other", "--model", str(demo_model_dir), "--port", str(free_port()))
    _ok("install", "other", "--backend", "process")
    (root / "other" / "logs" / "server.log").write_text("earlier run\n")
    before = _snapshot(root / "other")

    _ok("create", "mine", "--model", "some-org/not-cached-model", "--port", str(free_port()))
    _ok("install", "mine", "--backend", "process")
    for args in (("start", "mine"), ("status", "mine"), ("logs", "mine"), ("watch", "mine"), ("restart", "mine"),
                 ("watch", "mine"), ("stop", "mine"), ("show", "mine"), ("list",), ("uninstall", "mine"),
                 ("create", "mine", "--model", str(demo_model_dir), "--force"), ("install", "mine")):
        run_json("deploy", *args)
        seen |= _recorded_pids(root)
    assert _snapshot(root / "other") == before
    assert sorted(p.name for p in root.iterdir()) == ["mine", "other"]
    assert not (root.parent / "xdg").exists()  # the process backend writes no service file anywhere


def test_api_key_reaches_the_server_through_the_environment_only(deploy_root, demo_model_dir, monkeypatch):
    root, seen = deploy_root
    key = "sk-deploy-test-7f3a"
    monkeypatch.setenv("DEPLOY_TEST_KEY", key)
    port = free_port()
    _ok("create", "keyed", "--model", str(demo_model_dir), "--port", str(port), "--api-key-env", "DEPLOY_TEST_KEY")
    _ok("install", "keyed", "--start", "--backend", "process")
    seen |= _recorded_pids(root)
    assert _ok("watch", "keyed")["ready"]
    pid = _ok("status", "keyed")["pid"]
    family = [pid, *descendants(pid)]
    seen |= set(family)
    for p in family:
        assert key not in Path(f"/proc/{p}/cmdline").read_text()
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    assert httpx.post(url, json=body, timeout=60).status_code == 401
    assert httpx.post(url, json=body, timeout=120, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    for f in (root / "keyed").rglob("*"):
        assert not f.is_file() or key not in f.read_text(errors="replace")
    _ok("stop", "keyed")
