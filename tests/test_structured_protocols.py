"""A schema that cannot compile is a 400 naming the field in the Responses and Gemini routes too."""

from __future__ import annotations

import pytest

httpx = pytest.importorskip("httpx2")

KEY = {"Authorization": "Bearer sk-test"}
BAD = {"type": "foo"}


def test_responses_bad_schema_is_a_400(served):
    model = httpx.get(served.base + "/v1/models", headers=KEY, timeout=30).json()["data"][0]["id"]
    body = {"model": model, "input": "Hi", "max_output_tokens": 8,
            "text": {"format": {"type": "json_schema", "name": "x", "schema": BAD}}}
    r = httpx.post(served.base + "/v1/responses", json=body, headers=KEY, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "output_format", r.text


def test_gemini_bad_schema_is_a_400(served):
    model = httpx.get(served.base + "/v1/models", headers=KEY, timeout=30).json()["data"][0]["id"]
    body = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
            "generationConfig": {"maxOutputTokens": 8, "responseMimeType": "application/json",
                                 "responseJsonSchema": BAD}}
    r = httpx.post(f"{served.base}/v1beta/models/{model}:generateContent", json=body,
                   headers={"x-goog-api-key": "sk-test"}, timeout=60)
    assert r.status_code == 400, r.text
    assert "foo" in r.text or "type" in r.text, r.text
    # the server still answers
    ok = httpx.post(f"{served.base}/v1beta/models/{model}:generateContent",
                    json={"contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
                          "generationConfig": {"maxOutputTokens": 2}},
                    headers={"x-goog-api-key": "sk-test"}, timeout=120)
    assert ok.status_code == 200, ok.text
