"""Gemini (``/v1beta/models/...``) through the official ``google-genai`` client, real HTTP, demo model."""

from __future__ import annotations

import pytest

genai = pytest.importorskip("google.genai")
httpx = pytest.importorskip("httpx2")
from google.genai import errors, types  # noqa: E402

from tests.serve_fixture import ServerProc  # noqa: E402

KEY = "gm-test"
ALIAS = "gemini-2.5-flash"
ASK = "Name three colors."
WEATHER = types.FunctionDeclaration(
    name="get_weather", description="Current weather of a city",
    parameters=types.Schema(type="OBJECT", properties={"city": types.Schema(type="STRING")}, required=["city"]))


@pytest.fixture(scope="module")
def server(serve_model_dir, tmp_path_factory):
    srv = ServerProc(serve_model_dir, tmp_path_factory.mktemp("gemini"), "--alias", f"*={serve_model_dir}",
                     env={"MLXK_API_KEY": KEY}).wait_ready()
    yield srv
    srv.stop()


def make_client(server, key=KEY):
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=server.base, timeout=120_000))


@pytest.fixture(scope="module")
def client(server):
    return make_client(server)


def config(**kw) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(**{"temperature": 0, "max_output_tokens": 12, **kw})


def test_text_usage_and_max_tokens(client):
    r = client.models.generate_content(model=ALIAS, contents=ASK, config=config(max_output_tokens=5,
                                                                                system_instruction="Be brief."))
    assert r.text and r.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert r.usage_metadata.candidates_token_count == 5
    counted = client.models.count_tokens(model=ALIAS, contents=ASK).total_tokens
    plain = client.models.generate_content(model=ALIAS, contents=ASK, config=config(max_output_tokens=2))
    assert plain.usage_metadata.prompt_token_count == counted


def test_stream_same_text(client):
    whole = client.models.generate_content(model=ALIAS, contents=ASK, config=config())
    chunks = list(client.models.generate_content_stream(model=ALIAS, contents=ASK, config=config()))
    assert "".join(c.text or "" for c in chunks) == whole.text
    assert all(c.candidates[0].finish_reason is None for c in chunks[:-1])
    assert chunks[-1].candidates[0].finish_reason == whole.candidates[0].finish_reason
    assert chunks[-1].usage_metadata.candidates_token_count == whole.usage_metadata.candidates_token_count


def test_stop_sequences(client):
    full = client.models.generate_content(model=ALIAS, contents=ASK, config=config(max_output_tokens=16)).text
    words = [w for w in full.split() if len(w) > 2]
    stop = words[len(words) // 2]
    cut = client.models.generate_content(model=ALIAS, contents=ASK,
                                         config=config(max_output_tokens=16, stop_sequences=[stop]))
    assert cut.text == full[:full.index(stop)] and cut.candidates[0].finish_reason == types.FinishReason.STOP


def test_function_call_round_trip_with_required_tool(client):
    tools = [types.Tool(function_declarations=[WEATHER])]
    forced = types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="ANY"))
    ask = "What is the weather in Paris?"
    r = client.models.generate_content(model=ALIAS, contents=ask,
                                       config=config(tools=tools, tool_config=forced, max_output_tokens=40))
    call = r.function_calls[0]
    assert call.name == "get_weather" and isinstance(call.args, dict)
    history = [types.Content(role="user", parts=[types.Part(text=ask)]),
               types.Content(role="model", parts=[types.Part(function_call=call)]),
               types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
                   name="get_weather", id=call.id, response={"result": "sunny, 21 C"}))])]
    answer = client.models.generate_content(model=ALIAS, contents=history, config=config(tools=tools))
    assert answer.text and not answer.function_calls


def test_prefix_cache_hits_on_the_second_turn(client):
    rules = " ".join(f"Rule {i}: answer in one short sentence." for i in range(30))
    first = [types.Content(role="user", parts=[types.Part(text="Hi.")])]
    client.models.generate_content(model=ALIAS, contents=first, config=config(system_instruction=rules,
                                                                             max_output_tokens=3))
    second = first + [types.Content(role="model", parts=[types.Part(text="Hello.")]),
                      types.Content(role="user", parts=[types.Part(text="Again.")])]
    r = client.models.generate_content(model=ALIAS, contents=second, config=config(system_instruction=rules,
                                                                                  max_output_tokens=3))
    assert r.usage_metadata.cached_content_token_count > r.usage_metadata.prompt_token_count // 2


def test_models_list_and_query_key(server):
    r = httpx.get(server.base + f"/v1beta/models?key={KEY}")
    assert r.status_code == 200
    models = r.json()["models"]
    assert models and all(m["name"].startswith("models/") and m["inputTokenLimit"] > 0 for m in models)
    body = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 2}}
    sse = httpx.post(server.base + f"/v1beta/models/{ALIAS}:streamGenerateContent?alt=sse&key={KEY}", json=body)
    assert sse.status_code == 200 and sse.text.startswith("data: {")


def test_errors_in_google_shape(server, client):
    wrong = make_client(server, "wrong")  # kept referenced: the SDK closes its connection pool when collected
    with pytest.raises(errors.ClientError) as e:
        wrong.models.generate_content(model=ALIAS, contents=ASK)
    assert e.value.code == 401 and e.value.status == "UNAUTHENTICATED"
    with pytest.raises(errors.ClientError) as e:
        client.models.generate_content(model=ALIAS, contents=[types.Part.from_bytes(data=b"\x89PNG", mime_type="image/png")])
    assert e.value.code == 400 and e.value.status == "INVALID_ARGUMENT" and "images" in e.value.message
    r = httpx.post(server.base + f"/v1beta/models/{ALIAS}:generateContent", headers={"x-goog-api-key": KEY},
                   json={"contents": []})
    assert r.status_code == 400 and set(r.json()["error"]) == {"code", "message", "status"}
    r = httpx.post(server.base + f"/v1beta/models/{ALIAS}:embedContent", headers={"x-goog-api-key": KEY},
                   json={"contents": []})
    assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND"


def test_auth_off_for_every_protocol(serve_model_dir, tmp_path_factory):
    """Without a key the four protocols answer without one."""
    srv = ServerProc(serve_model_dir, tmp_path_factory.mktemp("nokey"), "--no-prefix-cache").wait_ready()
    try:
        small = {"model": "", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(srv.base + "/v1/messages", json=small, timeout=60).status_code == 200
        assert httpx.post(srv.base + "/v1/chat/completions", json=small, timeout=60).status_code == 200
        assert httpx.post(srv.base + "/v1/responses", json={"input": "hi", "max_output_tokens": 1},
                          timeout=60).status_code == 200
        assert httpx.post(srv.base + "/v1beta/models/:countTokens", json={"contents": [{"parts": [{"text": "hi"}]}]},
                          timeout=60).json()["totalTokens"] > 0
    finally:
        srv.stop()
