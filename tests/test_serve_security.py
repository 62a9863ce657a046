"""``mlxk serve`` against hostile pages and careless set-ups: JSON-only bodies (CSRF), Host
(DNS rebinding), CORS, the API key and where it travels, non-loopback binds."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.serve_fixture import ServerProc

httpx = pytest.importorskip("httpx2")
openai = pytest.importorskip("openai")

KEY = "sk-guarded-4c1f9a"
AUTH = {"Authorization": f"Bearer {KEY}"}
EVIL = "http://evil.example"
BODY = {"prompt": "Hello", "max_tokens": 1, "temperature": 0}


@pytest.fixture(scope="module")
def guarded(serve_model_dir, tmp_path_factory):
    """Key from MLXK_API_KEY, one extra Host name and one extra CORS origin."""
    tmp = tmp_path_factory.mktemp("guarded")
    srv = ServerProc(serve_model_dir, tmp, "--allowed-host", "api.example", "--cors-origin", "http://app.example",
                     env={"MLXK_API_KEY": KEY}).wait_ready()
    yield srv
    srv.stop()


def _requests_total(srv) -> int:
    text = httpx.get(srv.base + "/metrics").text
    return int(re.search(r"^mlxk_requests_total (\d+)$", text, re.M).group(1))


def _error(r, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["code"] == code and err["message"] and "type" in err and "param" in err, err


def _cmdline(pid: int) -> str:
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/<pid>/cmdline")
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


# --- bodies: JSON only ----------------------------------------------------------------------

@pytest.mark.parametrize("content_type", ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", None])
def test_non_json_post_refused_and_nothing_generated(guarded, content_type):
    # what a page can send cross-origin without a preflight: a valid JSON text under another type
    before = _requests_total(guarded)
    headers = dict(AUTH)
    if content_type:
        headers["Content-Type"] = content_type
    r = httpx.post(guarded.base + "/v1/completions", content=b'{"prompt": "Hello", "max_tokens": 1}', headers=headers)
    _error(r, 415, "unsupported_media_type")
    assert _requests_total(guarded) == before


def test_json_with_charset_is_served(guarded):
    r = httpx.post(guarded.base + "/v1/completions", content=b'{"prompt": "Hello", "max_tokens": 1}',
                   headers={**AUTH, "Content-Type": "application/json; charset=utf-8"}, timeout=60)
    assert r.status_code == 200, r.text


# --- Host: DNS rebinding -------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/health", "/metrics", "/v1/models"])
def test_foreign_host_refused_on_every_route(guarded, path):
    r = httpx.get(guarded.base + path, headers={**AUTH, "Host": f"evil.example:{guarded.port}"})
    _error(r, 403, "host_not_allowed")


def test_foreign_host_post_generates_nothing(guarded):
    before = _requests_total(guarded)
    r = httpx.post(guarded.base + "/v1/completions", json=BODY, headers={**AUTH, "Host": "evil.example"})
    _error(r, 403, "host_not_allowed")
    assert _requests_total(guarded) == before


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "api.example"])
def test_local_and_allowed_hosts_served(guarded, host):
    for value in (host, f"{host}:{guarded.port}"):
        r = httpx.get(guarded.base + "/v1/models", headers={**AUTH, "Host": value})
        assert r.status_code == 200, (value, r.text)


def test_allowed_host_is_exact(guarded):
    r = httpx.get(guarded.base + "/health", headers={"Host": "sub.api.example"})
    _error(r, 403, "host_not_allowed")


# --- CORS ----------------------------------------------------------------------------------

def _preflight(srv, origin: str):
    return httpx.options(srv.base + "/v1/chat/completions", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})


@pytest.mark.parametrize("origin", ["http://localhost:5173", "http://127.0.0.1:3000", "http://[::1]:8080",
                                    "http://localhost", "http://app.example"])
def test_preflight_allowed(guarded, origin):
    r = _preflight(guarded, origin)
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == origin
    assert "POST" in r.headers["access-control-allow-methods"]
    allowed = r.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert "origin" in r.headers["vary"].lower()


@pytest.mark.parametrize("origin", [EVIL, "null", "http://localhost.evil.example", "http://app.example:8443"])
def test_preflight_refused(guarded, origin):
    r = _preflight(guarded, origin)
    _error(r, 403, "origin_not_allowed")
    assert "access-control-allow-origin" not in r.headers


def test_foreign_origin_cannot_drive_the_server(guarded):
    # the browser would hide the answer, but the generation must not even run
    before = _requests_total(guarded)
    r = httpx.post(guarded.base + "/v1/completions", json=BODY, headers={**AUTH, "Origin": EVIL})
    _error(r, 403, "origin_not_allowed")
    _error(httpx.get(guarded.base + "/health", headers={"Origin": EVIL}), 403, "origin_not_allowed")
    assert _requests_total(guarded) == before


def test_cors_origin_and_localhost_pages_get_answers(guarded):
    for origin in ("http://app.example", "http://localhost:5173"):
        r = httpx.post(guarded.base + "/v1/completions", json=BODY, headers={**AUTH, "Origin": origin}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == origin


def test_same_origin_page_is_served(guarded):
    # a page served under an allowed Host name is same-origin with the API there
    host = f"api.example:{guarded.port}"
    r = httpx.get(guarded.base + "/v1/models", headers={**AUTH, "Host": host, "Origin": f"http://{host}"})
    assert r.status_code == 200, r.text
    r = httpx.get(guarded.base + "/v1/models", headers={**AUTH, "Host": host, "Origin": "http://api.example:1"})
    _error(r, 403, "origin_not_allowed")


# --- the API key ---------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"},
                                     {"Authorization": f"Bearer {KEY}x"}, {"Authorization": KEY}])
def test_missing_or_wrong_key_401(guarded, headers):
    for r in (httpx.get(guarded.base + "/v1/models", headers=headers),
              httpx.post(guarded.base + "/v1/completions", json=BODY, headers=headers)):
        _error(r, 401, "invalid_api_key")
    assert httpx.get(guarded.base + "/health").status_code == 200  # liveness needs no key


def test_key_from_env_works_and_never_in_argv(guarded):
    client = openai.OpenAI(base_url=guarded.base + "/v1", api_key=KEY, max_retries=0, timeout=60)
    assert client.completions.create(model=client.models.list().data[0].id, prompt="Hi", max_tokens=1).choices
    worker = guarded.worker_pid()
    assert "--supervisor-pid" in _cmdline(worker)
    for pid in (guarded.proc.pid, worker):
        assert KEY not in _cmdline(pid)


def test_key_file_and_deprecated_flag(serve_model_dir, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("sk-from-file\n")
    srv = ServerProc(serve_model_dir, tmp_path, "--api-key-file", str(key_file)).wait_ready()
    try:
        good = openai.OpenAI(base_url=srv.base + "/v1", api_key="sk-from-file", max_retries=0, timeout=60)
        assert good.models.list().data
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.base + "/v1", api_key="sk-other", max_retries=0).models.list()
        assert "sk-from-file" not in _cmdline(srv.worker_pid())
    finally:
        srv.stop()
    srv = ServerProc(serve_model_dir, tmp_path, "--api-key", "sk-on-the-cli").wait_ready()
    try:
        assert httpx.get(srv.base + "/v1/models", headers={"Authorization": "Bearer sk-on-the-cli"}).status_code == 200
        assert "sk-on-the-cli" not in _cmdline(srv.worker_pid())  # the supervisor passes it on in the environment
    finally:
        srv.stop()
    assert "--api-key is visible to every user" in srv.log()


def test_key_file_errors(tmp_path):
    missing = run_cli("serve", "--api-key-file", str(tmp_path / "nope"))
    assert missing.returncode == 3 and "Cannot read the API key file" in missing.stderr, missing.stderr
    (tmp_path / "empty").write_text("\n")
    empty = run_cli("serve", "--api-key-file", str(tmp_path / "empty"))
    assert empty.returncode == 1 and "is empty" in empty.stderr, empty.stderr
    both = run_cli("serve", "--api-key", "a", "--api-key-file", str(tmp_path / "empty"))
    assert both.returncode == 1 and "not both" in both.stderr, both.stderr


# --- binding beyond loopback ---------------------------------------------------------------

@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7"])
def test_non_loopback_bind_without_key_refused(host):
    # refused before anything binds: safe to ask for a wildcard address here
    proc = run_cli("serve", "--host", host, "--port", "1", env={"MLXK_API_KEY": ""}, timeout=60)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert f"Refusing to bind {host} without an API key" in proc.stderr
    assert "--insecure-no-auth" in proc.stderr and "MLXK_API_KEY" in proc.stderr


def test_help_names_the_new_flags():
    out = run_cli("serve", "--help").stdout
    for flag in ("--allowed-host", "--cors-origin", "--api-key-file", "--insecure-no-auth", "MLXK_API_KEY"):
        assert flag in out, flag
