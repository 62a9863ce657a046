"""engine/constraints.py with the real llguidance and the demo model's tokenizer: what each
request is constrained to, the mask as mx applies it, the grammar cache, and ``mlxk run
--json-schema`` / ``--json-object``."""

from __future__ import annotations

import json

import pytest

from mlxk.engine.constraints import Constraints, SchemaError, apply_mask, check, plan
from mlxk.engine.requests import GenerationRequest, OutputFormat, SamplingParams
from tests.conftest import run_json

jsonschema = pytest.importorskip("jsonschema")

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                           "population": {"type": "integer", "minimum": 0, "maximum": 10**9}},
          "required": ["city", "population"], "additionalProperties": False}


def req(**kw) -> GenerationRequest:
    return GenerationRequest(None, SamplingParams(), messages=[{"role": "user", "content": "hi"}], **kw)


@pytest.fixture(scope="module")
def tokenizer(demo_model_dir):
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    return load_tokenizer(demo_model_dir)


@pytest.fixture(scope="module")
def group(tokenizer):
    return Constraints(tokenizer, None)


def consumes(group, spec, text: str) -> bool:
    m = group.matcher(spec.grammar)
    toks = group.llt.tokenize_str(text)
    return m.try_consume_tokens(toks) == len(toks) and not m.is_error()


def test_plan_picks_the_constraint():
    assert plan(req()) is None
    assert plan(req(output_format=OutputFormat("text"))) is None
    assert plan(req(output_format=OutputFormat("json_object"))).mode == "json"
    assert plan(req(output_format=OutputFormat("json_schema", SCHEMA))).mode == "json"
    assert plan(req(tools=[WEATHER], tool_choice="get_weather")).mode == "call"
    assert plan(req(tools=[WEATHER], tool_choice="required")).mode == "call"
    assert plan(req(tools=[WEATHER], tool_choice="none")) is None
    assert plan(req(tools=[WEATHER])) is None  # auto without the model: nothing known about its markup


@pytest.mark.parametrize("kw,field,index", [
    ({"output_format": OutputFormat("json_schema", {"type": "foo"})}, "output_format", None),
    ({"output_format": OutputFormat("json_schema", {"not": {"type": "string"}})}, "output_format", None),
    ({"output_format": OutputFormat("yaml")}, "output_format", None),
    ({"tools": [WEATHER], "tool_choice": "get_stock"}, "tool_choice", None),
    ({"tool_choice": "required"}, "tool_choice", None),
    ({"tools": [WEATHER, {"type": "function", "function": {"name": "x", "parameters": {"type": 7}}}]}, "tools", 1),
])
def test_check_names_the_culprit(kw, field, index):
    with pytest.raises(SchemaError) as exc:
        check(req(**kw))
    assert (exc.value.field, exc.value.index) == (field, index)


def test_schema_grammar_takes_valid_json_only(group):
    spec = plan(req(output_format=OutputFormat("json_schema", SCHEMA)))
    assert consumes(group, spec, '{"city": "Paris", "population": 2100000}')
    assert not consumes(group, spec, '{"city": "Paris", "population": -1}')
    assert not consumes(group, spec, '{"town": "Paris"')
    m = group.matcher(spec.grammar)
    m.consume_tokens(group.llt.tokenize_str('{"city": "Paris", "population": 2}'))
    assert m.is_stopped()  # complete: the engine ends the sequence with "stop"


def test_forced_call_is_one_call_of_the_named_tool(group):
    spec = plan(req(tools=[WEATHER], tool_choice="get_weather"))
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert consumes(group, spec, call)
    assert not consumes(group, spec, 'Sure! ' + call)
    assert not consumes(group, spec, call.replace("get_weather", "get_stock"))
    assert not consumes(group, spec, call.replace('"city"', '"town"'))


def test_auto_is_free_text_until_a_call_opens(group, tokenizer):
    spec = plan(req(tools=[WEATHER]), tokenizer)  # the demo model has no native tools: the fallback markup
    assert spec is not None and spec.mode == "lazy"
    assert consumes(group, spec, "Any text at all, {even} <tool> things.")
    good = 'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\nDone.'
    assert consumes(group, spec, good)
    assert not consumes(group, spec, 'Let me look.\n<tool_call>\n{"name": "get_stock"')
    assert not consumes(group, spec, 'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"town": 1')


def test_compiled_grammars_are_cached_by_schema(group):
    spec = plan(req(output_format=OutputFormat("json_schema", {"type": "object", "properties": {"q": {"type": "integer"}}})))
    first = group.matcher(spec.grammar)
    assert spec.grammar in group._compiled
    n = len(group._compiled)
    again = plan(req(output_format=OutputFormat("json_schema", {"type": "object", "properties": {"q": {"type": "integer"}}})))
    second = group.matcher(again.grammar)
    assert len(group._compiled) == n and second is not first  # same compiled grammar, a fresh copy each time


def test_mask_applied_with_mx_matches_llguidance(group):
    """The bit unpacking in mx (any backend) allows exactly the tokens llguidance's bitmask allows."""
    import mlx.core as mx
    import llguidance.numpy as lnp
    import numpy as np

    spec = plan(req(output_format=OutputFormat("json_schema", SCHEMA)))
    m = group.matcher(spec.grammar)
    m.consume_tokens(group.llt.tokenize_str('{"city": "Pa'))
    bitmask = lnp.allocate_token_bitmask(1, group.n_vocab)
    lnp.fill_next_token_bitmask(m, bitmask)
    logits = np.random.default_rng(0).standard_normal((1, group.n_vocab)).astype(np.float32)
    expected = logits.copy()
    lnp.apply_token_bitmask_inplace(expected, bitmask)
    got = np.array(apply_mask(mx.array(logits), mx.array(bitmask)))
    assert np.array_equal(np.isinf(got), np.isinf(expected)) and 0 < np.isfinite(got).sum() < group.n_vocab
    assert np.array_equal(got[np.isfinite(got)], expected[np.isfinite(expected)])


def test_run_json_schema_answer_validates(demo_model_in_cache, tmp_path):
    schema_file = tmp_path / "city.json"
    schema_file.write_text(json.dumps(SCHEMA))
    payload, rc = run_json("run", "SmolLM2", "Tell me about Paris.", "--json-schema", str(schema_file),
                           "--max-tokens", "60", "--temperature", "1", "--seed", "3")
    assert rc == 0, payload
    jsonschema.validate(json.loads(payload["data"]["response"]), SCHEMA)
    assert payload["data"]["finish_reason"] == "stop"


def test_run_json_object_answer_is_an_object(demo_model_in_cache):
    payload, rc = run_json("run", "SmolLM2", "Tell me about Paris.", "--json-object", "--max-tokens", "60",
                           "--temperature", "1", "--seed", "5")
    assert rc == 0, payload
    assert isinstance(json.loads(payload["data"]["response"]), dict)


@pytest.mark.parametrize("content,fragment", [(None, "cannot read"), ("{nope", "is not JSON"),
                                              ('{"type": "foo"}', "Invalid type"), ("[1]", "JSON object")])
def test_run_refuses_a_bad_schema_file_before_loading(tmp_path, content, fragment):
    schema_file = tmp_path / "s.json"
    if content is not None:
        schema_file.write_text(content)
    payload, rc = run_json("run", "org/not-even-there", "hi", "--json-schema", str(schema_file))
    assert rc == 1 and payload["error"]["type"] == "ValidationError"
    assert payload["error"]["message"].startswith("--json-schema:") and fragment in payload["error"]["message"]
    assert str(tmp_path) not in payload["error"]["message"]  # the file's name, never an absolute path


def test_tool_schemas_with_keywords_the_grammar_cannot_enforce_are_accepted():
    """Claude Code's tools use propertyNames: the request must not be refused for it."""
    from mlxk.engine.constraints import check, plan
    from mlxk.engine.requests import GenerationRequest, SamplingParams

    params = {"type": "object", "properties": {"tags": {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"},
                                                        "additionalProperties": {"type": "string"}}},
              "required": ["tags"]}
    tool = {"type": "function", "function": {"name": "TaskCreate", "parameters": params}}
    for choice in ("auto", "required", "TaskCreate"):
        req = GenerationRequest(None, SamplingParams(), messages=[{"role": "user", "content": "x"}],
                                tools=[tool], tool_choice=choice)
        check(req)
    assert plan(GenerationRequest(None, SamplingParams(), messages=[{"role": "user", "content": "x"}],
                                  tools=[tool], tool_choice="required")).mode == "call"
