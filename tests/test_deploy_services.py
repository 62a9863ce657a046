"""The service backends: the systemd unit and the launchd plist as written, and the calls made.

``systemctl`` here is a stand-in script on PATH (there is no user manager in a container)
that records its arguments and answers ``show`` like systemd does; the unit it is handed is
the real one, checked by ``systemd-analyze verify`` where that exists. launchd cannot run
off macOS: its plist and its ``launchctl print`` reading are checked as data.
"""

from __future__ import annotations

import json
import os
import plistlib
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mlxk.deploy import backend_launchd, backend_systemd
from mlxk.deploy.backends import LaunchSpec
from mlxk.deploy.launch import runner_argv
from mlxk.deploy.store import Deployment
from tests.conftest import run_json
from tests.serve_fixture import free_port

FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "$FAKE_SYSTEMCTL_LOG"
case "$*" in
  *show-environment*) exit "${FAKE_SYSTEMCTL_MANAGER:-0}" ;;
  *" show "*) cat "$FAKE_SYSTEMCTL_SHOW" 2>/dev/null ;;
esac
exit 0
"""


@pytest.fixture
def fake_systemd(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "systemctl"
    script.write_text(FAKE_SYSTEMCTL)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "systemctl.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SYSTEMCTL_LOG", str(log))
    monkeypatch.setenv("FAKE_SYSTEMCTL_SHOW", str(tmp_path / "show.txt"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("MLXK_DEPLOY_DIR", str(tmp_path / "deploy dir"))  # a space: quoting is exercised
    return tmp_path, log


def _calls(log: Path) -> list[str]:
    return [ln for ln in log.read_text().splitlines() if "show-environment" not in ln] if log.exists() else []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the systemd backend is Linux only")
def test_systemd_install_start_status_uninstall(fake_systemd, demo_model_dir):
    tmp, log = fake_systemd
    root = tmp / "deploy dir"
    payload, rc = run_json("deploy", "create", "web", "--model", str(demo_model_dir), "--port", str(free_port()),
                           "--display-name", "Web 100%")
    assert rc == 0, payload
    payload, rc = run_json("deploy", "install", "web")  # no --backend: a user manager answers, so systemd
    assert rc == 0, payload
    assert payload["data"]["backend"] == "systemd"
    assert payload["data"]["service_files"] == ["mlxk-web.service"]
    unit = tmp / "xdg" / "systemd" / "user" / "mlxk-web.service"
    text = unit.read_text()
    assert _calls(log) == ["--user daemon-reload", "--user enable mlxk-web.service"]

    lines = text.splitlines()
    exec_start = next(ln for ln in lines if ln.startswith("ExecStart="))
    assert exec_start == f'ExecStart={sys.executable} -m mlxk.deploy.runner --root "{root}" web'
    assert "Restart=on-failure" in lines and "KillMode=mixed" in lines and "WantedBy=default.target" in lines
    assert f"StandardOutput=append:{root}/web/logs/server.log" in lines
    assert f"StandardError=append:{root}/web/logs/server.log" in lines
    assert f"WorkingDirectory={root}/web" in lines
    assert "Description=mlxk deployment web (Web 100%%)" in lines
    assert f'Environment="MLXK_DEPLOY_DIR={root}"' in lines
    assert f"Environment=HF_HOME={os.environ['HF_HOME']}" in lines
    assert "MLXK_API_KEY" not in text
    if shutil.which("systemd-analyze"):
        proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    log.write_text("")
    payload, rc = run_json("deploy", "start", "web")
    assert rc == 0, payload
    assert "--user start mlxk-web.service" in _calls(log)
    (tmp / "show.txt").write_text("ActiveState=active\nSubState=running\nMainPID=4242\nResult=success\n"
                                  "ExecMainStatus=0\nExecMainStartTimestampMonotonic=0\n")
    st, rc = run_json("deploy", "status", "web")
    assert (st["data"]["state"], st["data"]["pid"], st["data"]["backend"]) == ("running", 4242, "systemd")
    (tmp / "show.txt").write_text("ActiveState=failed\nSubState=failed\nMainPID=0\nResult=exit-code\n"
                                  "ExecMainStatus=2\n")
    st, rc = run_json("deploy", "status", "web")
    assert st["data"]["state"] == "failed" and "exit-code" in st["data"]["reason"]

    log.write_text("")
    payload, rc = run_json("deploy", "uninstall", "web")
    assert rc == 0, payload
    assert "--user disable --now mlxk-web.service" in _calls(log)
    assert "--user daemon-reload" in _calls(log)
    assert not unit.exists()
    assert sorted(p.name for p in (root / "web").iterdir()) == ["config.json", "logs"]


def test_without_a_user_manager_the_process_backend_is_chosen(fake_systemd, demo_model_dir, monkeypatch):
    tmp, log = fake_systemd
    monkeypatch.setenv("FAKE_SYSTEMCTL_MANAGER", "1")  # 'Failed to connect to bus', as in a container
    run_json("deploy", "create", "web", "--model", str(demo_model_dir), "--port", str(free_port()))
    payload, rc = run_json("deploy", "install", "web")
    assert rc == 0 and payload["data"]["backend"] == "process"
    assert not (tmp / "xdg").exists()
    payload, rc = run_json("deploy", "install", "web", "--backend", "systemd")
    assert rc == 1 and payload["error"]["field"] == "backend"


def test_launchd_is_refused_where_there_is_no_launchd(fake_systemd, demo_model_dir):
    if sys.platform == "darwin":
        pytest.skip("launchd exists here")
    run_json("deploy", "create", "web", "--model", str(demo_model_dir), "--port", str(free_port()))
    payload, rc = run_json("deploy", "install", "web", "--backend", "launchd")
    assert rc == 1 and "macOS" in payload["error"]["message"]


def test_launchd_plist(tmp_path):
    dep = Deployment(tmp_path / "deploy", "chat")
    spec = LaunchSpec(runner_argv(dep), {"HF_HOME": "/data/hf"}, "Chat")
    plist = plistlib.loads(backend_launchd.render_plist(dep, spec))
    assert plist["Label"] == "com.local.mlx-chat"
    assert plist["ProgramArguments"] == [sys.executable, "-m", "mlxk.deploy.runner", "--root",
                                         str(tmp_path / "deploy"), "chat"]
    assert plist["KeepAlive"] == {"SuccessfulExit": False} and plist["RunAtLoad"] is True
    log = str(tmp_path / "deploy" / "chat" / "logs" / "server.log")
    assert plist["StandardOutPath"] == log and plist["StandardErrorPath"] == log
    assert plist["EnvironmentVariables"] == {"HF_HOME": "/data/hf"}
    assert plist["WorkingDirectory"] == str(tmp_path / "deploy" / "chat")
    assert backend_launchd.plist_path(dep).name == "com.local.mlx-chat.plist"


LAUNCHCTL_RUNNING = """gui/501/com.local.mlx-chat = {
\tactive count = 1
\tpath = /Users/u/Library/LaunchAgents/com.local.mlx-chat.plist
\tstate = running
\tprogram = /usr/bin/python3
\tpid = 8123
\tlast exit code = (never exited)
}
"""
LAUNCHCTL_CRASHED = """gui/501/com.local.mlx-chat = {
\tactive count = 0
\tstate = not running
\tlast exit code = 2
}
"""


def test_launchd_states(tmp_path):
    dep = Deployment(tmp_path, "chat")
    running = backend_launchd.state_from_print(LAUNCHCTL_RUNNING, dep)
    assert (running.state, running.pid) == ("running", 8123)
    crashed = backend_launchd.state_from_print(LAUNCHCTL_CRASHED, dep)
    assert crashed.state == "failed" and "2" in crashed.reason
    assert backend_launchd.state_from_print(None, dep).state == "installed"
    (tmp_path / "chat").mkdir()
    (tmp_path / "chat" / "run.json").write_text(json.dumps({"desired": "stopped"}))
    assert backend_launchd.state_from_print(None, dep).state == "stopped"


def test_systemd_restarting_after_a_crash_is_failed(tmp_path):
    dep = Deployment(tmp_path, "chat")
    props = backend_systemd.parse_show("ActiveState=activating\nSubState=auto-restart\nMainPID=0\n"
                                       "Result=signal\nExecMainStatus=9\n")
    st = backend_systemd.state_from_show(props, dep)
    assert st.state == "failed" and "restarting" in st.reason
    assert backend_systemd.state_from_show({"ActiveState": "inactive"}, dep).state == "installed"


def test_unit_quoting_of_specifiers_and_variables(tmp_path):
    dep = Deployment(tmp_path / "a$b%c d", "x")
    unit = backend_systemd.render_unit(dep, LaunchSpec(runner_argv(dep), {"K": "v$1 %h"}))
    exec_start = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    assert f'"{tmp_path}/a$$b%%c d"' in exec_start  # ExecStart expands $ and %
    assert 'Environment="K=v$1 %%h"' in unit.splitlines()  # Environment= expands % only
    if shutil.which("systemd-analyze"):
        path = tmp_path / "mlxk-x.service"
        path.write_text(unit)
        proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
