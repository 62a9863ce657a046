"""Issue 19 part 6, against a real server with the official SDKs: Gemini fields in both proto3
spellings constrain the answer (google-genai sends ``parameters_json_schema`` in snake_case),
mode ANY always yields a call whose args match the schema; in every protocol an unsupported
field that would change the answer is a 400 naming it, and ignored fields are logged by name.

The demo model is small: every assertion rests on a constrained call or output (the grammar
decides its shape), at temperature 1 with several seeds, never on what the model knows.
"""

from __future__ import annotations

import json

import pytest

genai = pytest.importorskip("google.genai")
httpx = pytest.importorskip("httpx2")
jsonschema = pytest.importorskip("jsonschema")
anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")
from google.genai import errors, types  # noqa: E402

from tests.serve_fixture import ServerProc  # noqa: E402

KEY = "rf-test"
MODEL = "gemini-2.5-flash"
ASK = "Plan a trip: which city, how many days, which unit for temperatures?"
SEEDS = (1, 2, 3)
TRIP = {"type": "object", "properties": {"city": {"type": "string", "minLength": 1, "maxLength": 12},
                                         "days": {"type": "integer", "minimum": 1, "maximum": 7},
                                         "unit": {"enum": ["C", "F"]}},
        "required": ["city", "days", "unit"], "additionalProperties": False}
# The same contract in Google's schema dialect, snake_case keys as the SDK's Schema serialises them.
TRIP_DIALECT = types.Schema(type="OBJECT", required=["city", "days", "unit"], property_ordering=["unit", "city", "days"],
                            properties={"city": types.Schema(type="STRING", min_length=1, max_length=12),
                                        "days": types.Schema(type="INTEGER", format="int32", minimum=1, maximum=7),
                                        "unit": types.Schema(type="STRING", enum=["C", "F"])})
DIALECT_AS_JSON = {**TRIP, "properties": {**TRIP["properties"], "unit": {"type": "string", "enum": ["C", "F"]}}}


@pytest.fixture(scope="module")
def server(serve_model_dir, tmp_path_factory):
    srv = ServerProc(serve_model_dir, tmp_path_factory.mktemp("fields"), "--alias", f"*={serve_model_dir}",
                     env={"MLXK_API_KEY": KEY}).wait_ready()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=server.base, timeout=180_000))


def forced(**calling) -> types.ToolConfig:
    return types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="ANY", **calling))


def sdk_call(client, declarations, seed: int, **calling) -> types.FunctionCall:
    config = types.GenerateContentConfig(temperature=1.0, seed=seed, max_output_tokens=60,
                                         tools=[types.Tool(function_declarations=declarations)],
                                         tool_config=forced(**calling))
    r = client.models.generate_content(model=MODEL, contents=ASK, config=config)
    calls = r.function_calls or []
    assert len(calls) == 1, r.model_dump_json(exclude_none=True)
    return calls[0]


def test_sdk_snake_case_parameters_json_schema_constrains_mode_any(client):
    plan = types.FunctionDeclaration(name="plan_trip", description="Plan a trip", parameters_json_schema=TRIP)
    args = []
    for seed in SEEDS:
        call = sdk_call(client, [plan], seed)
        assert call.name == "plan_trip"
        jsonschema.validate(call.args, TRIP)
        args.append(call.args)
    assert all(set(a) == {"city", "days", "unit"} for a in args)


def test_sdk_dialect_parameters_with_snake_case_keywords_constrain_mode_any(client):
    plan = types.FunctionDeclaration(name="plan_trip", description="Plan a trip", parameters=TRIP_DIALECT)
    for seed in SEEDS[:1]:
        call = sdk_call(client, [plan], seed)
        jsonschema.validate(call.args, DIALECT_AS_JSON)
        assert list(call.args) == ["unit", "city", "days"]  # propertyOrdering is honoured


def test_allowed_function_names_picks_the_call(client):
    plan = types.FunctionDeclaration(name="plan_trip", parameters_json_schema=TRIP)
    other = types.FunctionDeclaration(name="get_time", parameters_json_schema={
        "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]})
    for seed in SEEDS[:1]:
        call = sdk_call(client, [plan, other], seed, allowed_function_names=["get_time"])
        assert call.name == "get_time" and call.args["zone"] in ("UTC", "CET")
    with pytest.raises(errors.ClientError) as e:
        sdk_call(client, [plan], 1, allowed_function_names=["nope"])
    assert e.value.code == 400 and "allowedFunctionNames" in e.value.message


def raw(server, body: dict, method: str = "generateContent") -> httpx.Response:
    return httpx.post(f"{server.base}/v1beta/models/{MODEL}:{method}", json=body,
                      headers={"x-goog-api-key": KEY}, timeout=180)


@pytest.mark.parametrize("spelling", ["camel", "snake"])
def test_raw_json_both_spellings_constrain_mode_any(server, spelling):
    def key(camel: str) -> str:
        return camel if spelling == "camel" else "".join("_" + c.lower() if c.isupper() else c for c in camel)

    decl = {"name": "plan_trip", key("parametersJsonSchema"): TRIP}
    for seed in SEEDS if spelling == "camel" else SEEDS[:1]:  # snake: the SDK test above runs several
        body = {"contents": [{"role": "user", "parts": [{"text": ASK}]}],
                "tools": [{key("functionDeclarations"): [decl]}],
                key("toolConfig"): {key("functionCallingConfig"): {"mode": "ANY"}},
                key("generationConfig"): {"temperature": 1.0, "seed": seed, key("maxOutputTokens"): 60}}
        r = raw(server, body)
        assert r.status_code == 200, r.text
        parts = r.json()["candidates"][0]["content"]["parts"]
        calls = [p["functionCall"] for p in parts if "functionCall" in p]
        assert len(calls) == 1 and calls[0]["name"] == "plan_trip", parts
        jsonschema.validate(calls[0]["args"], TRIP)


@pytest.mark.parametrize("field", ["responseJsonSchema", "response_json_schema"])
def test_response_json_schema_both_spellings(server, field):
    for seed in SEEDS[:1]:
        body = {"contents": [{"parts": [{"text": ASK}]}],
                "generation_config": {"response_mime_type": "application/json", field: TRIP, "temperature": 1.0,
                                      "seed": seed, "max_output_tokens": 60}}
        r = raw(server, body)
        assert r.status_code == 200, r.text
        text = "".join(p.get("text", "") for p in r.json()["candidates"][0]["content"]["parts"])
        jsonschema.validate(json.loads(text), TRIP)


def test_gemini_refuses_more_candidates_and_server_tools(client, server):
    with pytest.raises(errors.ClientError) as e:
        client.models.generate_content(model=MODEL, contents="Hi", config=types.GenerateContentConfig(
            candidate_count=2, max_output_tokens=2))
    assert e.value.code == 400 and e.value.status == "INVALID_ARGUMENT" and "candidateCount" in e.value.message
    r = raw(server, {"contents": [{"parts": [{"text": "Hi"}]}], "tools": [{"google_search": {}}]})
    assert r.status_code == 400 and "tools[0].googleSearch" in r.json()["error"]["message"], r.text


def test_openai_refuses_n_audio_and_echo(server):
    c = openai.OpenAI(base_url=server.base + "/v1", api_key=KEY)
    chat = [{"role": "user", "content": "Hi"}]
    for kw, name in ((dict(n=2), "n"), (dict(audio={"voice": "alloy", "format": "wav"}, modalities=["text", "audio"]),
                                          "audio"), (dict(logit_bias={"1": 5}), "logit_bias")):
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(model=MODEL, messages=chat, max_tokens=2, **kw)
        assert e.value.body["param"] == name and name in e.value.body["message"]
        assert e.value.body["code"] == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model=MODEL, prompt="Hi", max_tokens=2, echo=True)
    assert e.value.body["param"] == "echo"


def test_responses_refuses_background(server):
    c = openai.OpenAI(base_url=server.base + "/v1", api_key=KEY)
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model=MODEL, input="Hi", max_output_tokens=2, background=True)
    assert e.value.body["param"] == "background" and "background" in e.value.body["message"]


def test_anthropic_refuses_mcp_servers(server):
    c = anthropic.Anthropic(base_url=server.base, api_key=KEY)
    with pytest.raises(anthropic.BadRequestError) as e:
        c.messages.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "Hi"}],
                          extra_body={"mcp_servers": [{"type": "url", "url": "http://127.0.0.1:9", "name": "x"}]})
    assert e.value.body["type"] == "error" and "mcp_servers" in e.value.body["error"]["message"]


def test_anthropic_output_config_format_is_structured_output(server):
    c = anthropic.Anthropic(base_url=server.base, api_key=KEY)
    r = c.messages.create(model=MODEL, max_tokens=60, messages=[{"role": "user", "content": ASK}],
                          output_config={"format": {"type": "json_schema", "schema": TRIP}},
                          extra_body={"temperature": 1.0})
    jsonschema.validate(json.loads(r.content[0].text), TRIP)


def test_ignored_fields_are_logged_by_name(server, client):
    o = openai.OpenAI(base_url=server.base + "/v1", api_key=KEY)
    o.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=1,
                              user="someone", extra_body={"x_vendor_knob": 1})
    o.responses.create(model=MODEL, input="Hi", max_output_tokens=1, reasoning={"effort": "low"})
    anthropic.Anthropic(base_url=server.base, api_key=KEY).messages.create(
        model=MODEL, max_tokens=1, messages=[{"role": "user", "content": "Hi"}], metadata={"user_id": "u1"})
    client.models.generate_content(model=MODEL, contents="Hi", config=types.GenerateContentConfig(
        max_output_tokens=1, thinking_config=types.ThinkingConfig(thinking_budget=0),
        safety_settings=[types.SafetySetting(category="HARM_CATEGORY_HATE_SPEECH", threshold="BLOCK_NONE")]))
    lines = [ln for ln in server.log().splitlines() if "ignored fields:" in ln]
    assert any("openai.chat request" in ln and "user" in ln and "x_vendor_knob" in ln for ln in lines), lines
    assert any("responses request" in ln and "reasoning" in ln for ln in lines), lines
    assert any("anthropic request" in ln and "metadata" in ln for ln in lines), lines
    assert any("gemini request" in ln and "safetySettings" in ln and "generationConfig.thinkingConfig" in ln
               for ln in lines), lines
