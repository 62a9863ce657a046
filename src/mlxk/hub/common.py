"""Shared by pull, push and clone: revision parsing, short-name expansion, error mapping."""

from __future__ import annotations

import os
import re

from mlxk.contract import MlxkError
from mlxk.store.names import DEFAULT_ORG, validate_name

_REV_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/\-]{0,127}$")


def split_revision(spec: str) -> tuple[str, str | None]:
    """``name@rev`` → (name, rev); rev may be a branch, tag or commit (prefix)."""
    spec = (spec or "").strip()
    if "@" not in spec:
        return spec, None
    name, _, rev = spec.rpartition("@")
    if not rev or not _REV_RE.match(rev) or ".." in rev:
        raise MlxkError("ValidationError", f"Invalid revision '{rev}' in '{spec}'")
    return name, rev


def hf_api():
    from huggingface_hub import HfApi

    return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=os.environ.get("HF_TOKEN") or None)


def network_errors() -> tuple[type[BaseException], ...]:
    import httpx2

    return (httpx2.TransportError, ConnectionError)


def map_hub_error(exc: BaseException, repo_id: str, revision: str | None, *, fail_type: str = "download_failed") -> MlxkError:
    """A huggingface_hub exception as an MlxkError with a message that says what to do."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError):
        return MlxkError(
            "access_denied",
            f"Access denied: gated model '{repo_id}'. Accept its terms on the Hub and set HF_TOKEN to a token with access.",
        )
    if isinstance(exc, RevisionNotFoundError):
        return MlxkError(fail_type, f"Revision '{revision}' not found in '{repo_id}'")
    if isinstance(exc, RepositoryNotFoundError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            hint = "set HF_TOKEN to a token with access" if not os.environ.get("HF_TOKEN") else "check that HF_TOKEN has access"
            return MlxkError(
                "access_denied",
                f"Access denied: '{repo_id}' does not exist or is private; {hint}.",
            )
        return MlxkError(fail_type, f"Repository not found: '{repo_id}'")
    if isinstance(exc, OfflineModeIsEnabled):
        return MlxkError("NetworkError", "Offline mode is enabled (HF_HUB_OFFLINE=1); unset it to reach the Hub")
    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return MlxkError("access_denied", f"Access denied for '{repo_id}' (HTTP {status}); check HF_TOKEN.")
        return MlxkError(fail_type, f"Hub error for '{repo_id}': {str(exc).splitlines()[0]}")
    if isinstance(exc, network_errors()):
        return MlxkError("NetworkError", f"Cannot reach the Hub ({type(exc).__name__}: {exc})")
    return MlxkError(fail_type, f"{type(exc).__name__}: {exc}")


def expand_name(api, name: str) -> tuple[str, str | None]:
    """The repo id to use and ``expanded_name`` (set when a short name became mlx-community/<name>)."""
    validate_name(name)
    if "/" in name:
        return name, None
    candidate = f"{DEFAULT_ORG}/{name}"
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        api.model_info(candidate)
        return candidate, candidate
    except RepositoryNotFoundError:
        return name, None
