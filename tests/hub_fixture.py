"""Fixtures for the Hub side: a Hub-protocol server per test, and the env that points the client at it."""

from __future__ import annotations

import pytest

from tests.hubserver import HubServer


@pytest.fixture
def hub(monkeypatch):
    """A running test Hub. The real huggingface_hub client reaches it through env vars only."""
    server = HubServer().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", server.state.token)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "5")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "5")
    yield server.state
    server.stop()
    assert not server.state.unimplemented, f"client called routes the test hub lacks: {server.state.unimplemented}"


def run_json(*args, **kw):
    """conftest.run_json, plus validation against the upstream 0.2.2 JSON schema."""
    from tests.conftest import run_json as _run_json
    from tests.schema import upstream_validate

    payload, rc = _run_json(*args, **kw)
    upstream_validate(payload)
    return payload, rc
