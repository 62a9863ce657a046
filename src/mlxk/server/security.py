"""Who may talk to ``mlxk serve``: Host and Origin rules, JSON-only bodies, the API key.

A local server is reachable by every web page the user opens. Three browser tricks are
closed here, before any route runs:

* **CSRF by "simple" requests**: a page may POST ``text/plain`` (or a form, or a bare
  body) cross-origin without a preflight. Every body-carrying request must therefore say
  ``Content-Type: application/json`` (415 otherwise); a browser only sends that after a
  preflight the Origin rule below answers.
* **DNS rebinding**: a page on ``evil.example`` re-resolves its name to 127.0.0.1 and becomes
  "same-origin" with the server. The browser still sends ``Host: evil.example``, so only
  the bound address, localhost names and ``--allowed-host`` names are served (403). IP
  literals are safe (no name to rebind): with a wildcard bind (0.0.0.0, ::) any IP is the
  bound address.
* **Cross-origin pages**: requests carrying an ``Origin`` are served only for same-origin
  pages, localhost pages (any port) and ``--cors-origin`` entries (``*`` for all); the
  others get 403 even where the browser would have hidden the answer, so a foreign page
  cannot make the server generate. Starlette's CORSMiddleware then writes the
  ``Access-Control-*`` headers and answers preflights for the origins let through.

Starlette's TrustedHostMiddleware and CORSMiddleware alone are not enough: they answer in
plain text, and CORSMiddleware lets a disallowed origin's simple request run.

The API key is compared in constant time. It reaches the server from ``MLXK_API_KEY`` or
``--api-key-file`` (and the worker only from its environment), never from an argv that
``ps`` shows to every user.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from mlxk.engine.requests import EngineError

API_KEY_ENV = "MLXK_API_KEY"
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "QUERY"})
_ORIGIN = re.compile(r"^(https?)://(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::(\d{1,5}))?$")


def _strip_brackets(name: str) -> str:
    return name[1:-1] if name.startswith("[") and name.endswith("]") else name


def split_host(value: str) -> tuple[str, str | None]:
    """``Host``-style ``name[:port]`` (IPv6 in brackets) → (lower-case name without brackets, port)."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return value, None
        name, rest = value[1:end], value[end + 1:]
        return name, (rest[1:] if rest.startswith(":") else None)
    if value.count(":") == 1:
        name, port = value.split(":")
        return name.rstrip("."), port
    return value.rstrip("."), None


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(_strip_brackets(name))
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    name = _strip_brackets(host.strip().lower())
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass
class SecurityPolicy:
    """The Host and Origin rules of one server (defaults: loopback bind, nothing extra)."""

    bind_host: str = "127.0.0.1"
    allowed_hosts: list[str] = field(default_factory=list)
    cors_origins: list[str] = field(default_factory=list)

    def host_allowed(self, host_header: str | None) -> bool:
        if host_header is None:  # HTTP/1.0 without Host: not a browser, so not a rebinding page
            return True
        name, _ = split_host(host_header)
        bound = _strip_brackets(self.bind_host.strip().lower())
        allowed = {_strip_brackets(h.strip().lower()).rstrip(".") for h in self.allowed_hosts}
        if "*" in allowed or name in LOCAL_NAMES or name == bound or name in allowed:
            return True
        return bound in WILDCARD_BINDS and is_ip(name)

    def origin_allowed(self, origin: str, host_header: str | None) -> bool:
        origin = origin.strip().lower().rstrip("/")
        configured = {o.strip().lower().rstrip("/") for o in self.cors_origins}
        if "*" in configured or origin in configured:
            return True
        match = _ORIGIN.match(origin)
        if match is None:  # "null" (sandboxed frames, file://) and anything malformed
            return False
        name = _strip_brackets(match.group(2))
        if name in LOCAL_NAMES:
            return True
        if host_header is None:
            return False
        host_name, host_port = split_host(host_header)
        return (name, match.group(3)) == (host_name, host_port)  # same origin as the page's server


def _refuse(status: int, message: str, code: str) -> JSONResponse:
    from mlxk.server.openai_api import error_body

    return JSONResponse(error_body(EngineError(status, message, code=code)), status_code=status)


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json"


class RequestGuard:
    """Pure ASGI (streams and disconnects pass through untouched): Host, Origin, Content-Type."""

    def __init__(self, app: ASGIApp, policy: SecurityPolicy):
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response = self.check(scope)
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def check(self, scope: Scope) -> JSONResponse | None:
        headers = Headers(scope=scope)
        host = headers.get("host")
        if not self.policy.host_allowed(host):
            return _refuse(403, f"Host '{host}' is not served here (start the server with --allowed-host to add it)",
                           "host_not_allowed")
        origin = headers.get("origin")
        if origin is not None and not self.policy.origin_allowed(origin, host):
            return _refuse(403, f"Origin '{origin}' is not allowed (start the server with --cors-origin to add it)",
                           "origin_not_allowed")
        if scope["method"] in BODY_METHODS and not _is_json(headers.get("content-type")):
            return _refuse(415, "The request body must be JSON sent with 'Content-Type: application/json'",
                           "unsupported_media_type")
        return None


def middleware(policy: SecurityPolicy) -> list[Middleware]:
    """The guard first; CORS headers (and preflight answers) only for origins it let through."""
    return [
        Middleware(RequestGuard, policy=policy),
        Middleware(CORSMiddleware, allow_origin_regex=".*", allow_methods=("GET", "POST", "OPTIONS"),
                   allow_headers=("*",), allow_private_network=True, max_age=600),
    ]


def bearer_key(headers: Mapping[str, str]) -> str | None:
    """The key of ``Authorization: Bearer KEY`` (None without one)."""
    scheme, _, key = headers.get("authorization", "").strip().partition(" ")
    return key.strip() if scheme.lower() == "bearer" and key.strip() else None


def check_key(expected: str | None, presented: str | None) -> None:
    """401 unless ``presented`` is the key. Constant time: both sides are hashed to the same
    length first, so neither the content nor the length of the key leaks through timing.
    Each protocol adapter finds its own header and calls this."""
    if not expected:
        return
    digest = lambda s: hashlib.sha256(s.encode("utf-8", "surrogatepass")).digest()  # noqa: E731
    if presented is None or not hmac.compare_digest(digest(expected), digest(presented)):
        raise EngineError(401, "Incorrect API key provided", param=None, code="invalid_api_key")


def read_key_file(path: str) -> str:
    """The key in ``path`` (surrounding whitespace and the final newline dropped)."""
    from mlxk.contract import MlxkError

    try:
        key = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise MlxkError("FilesystemError", f"Cannot read the API key file {path}: {exc}") from exc
    if not key:
        raise MlxkError("ValidationError", f"The API key file {path} is empty")
    return key


def resolve_api_key(cli_key: str | None, key_file: str | None, env: Mapping[str, str] = os.environ) -> str | None:
    """One key from ``--api-key`` (deprecated), ``--api-key-file`` or ``MLXK_API_KEY``, in that order."""
    from mlxk.contract import MlxkError

    if cli_key is not None and key_file is not None:
        raise MlxkError("ValidationError", "Give the API key once: --api-key or --api-key-file, not both")
    if cli_key is not None:
        if not cli_key.strip():
            raise MlxkError("ValidationError", "--api-key is empty")
        return cli_key.strip()
    if key_file is not None:
        return read_key_file(key_file)
    return env.get(API_KEY_ENV, "").strip() or None
