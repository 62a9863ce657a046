"""Tool-call markers that are added tokens, for every parser family mlx-lm 0.32.2 knows
(engine/tool_formats.py, engine/constraints.py).

Each family gets a tokenizer made from the demo model's: its markers replace some of the
demo's unused added tokens (ids 3..16, inside the embedding's 49,152 rows), and its chat
template names what mlx-lm's TokenizerWrapper looks for, so mlx-lm itself picks the
family's parser. Then, with the real llguidance: a forced call accepts the call written
with the marker tokens and written as text, and refuses anything else; in auto mode the
lazy grammar fires on the marker token and on its text; and the call, decoded as the
engine decodes it, is read back by mlx-lm's parser into the right name and arguments.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from mlxk.engine.constraints import constrain, plan
from mlxk.engine.output_parsing import parser_for
from mlxk.engine.requests import GenerationRequest, SamplingParams
from mlxk.engine.tool_formats import Lark

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"},
                                     "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                                     "days": {"type": "integer"}},
    "required": ["city", "unit"]}}}
STOCK = {"type": "function", "function": {"name": "get_stock", "parameters": {
    "type": "object", "properties": {"symbol": {"type": "string"}}, "required": ["symbol"]}}}
ARGS = {"city": "Paris", "unit": "celsius", "days": 3}
J = json.dumps(ARGS)  # the grammar's fixed separators are json.dumps' own
Q = '<|"|>'

# family: (added tokens, what the template names for mlx-lm, tool_parser_type or None, the forced call)
FAMILIES = {
    "json_tools": (["<tool_call>", "</tool_call>", "<think>", "</think>"], "<tool_call> tool_call.name", None,
                   f'<tool_call>\n{{"name": "get_weather", "arguments": {J}}}\n</tool_call>'),
    "qwen3_coder": (["<tool_call>", "</tool_call>"], "<tool_call>\n<function=", None,
                    "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
                    "<parameter=unit>\ncelsius\n</parameter>\n<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>"),
    "glm47": (["<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>"], "<arg_key>", None,
              "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value><arg_key>unit</arg_key>"
              "<arg_value>celsius</arg_value><arg_key>days</arg_key><arg_value>3</arg_value></tool_call>"),
    "laguna": (["<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>"], "", "laguna",
               "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value><arg_key>unit</arg_key>"
               "<arg_value>celsius</arg_value></tool_call>"),
    "minimax_m2": (["<minimax:tool_call>", "</minimax:tool_call>"], "<minimax:tool_call>", None,
                   '<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">Paris</parameter>\n'
                   '<parameter name="unit">celsius</parameter>\n<parameter name="days">3</parameter>\n</invoke>\n'
                   "</minimax:tool_call>"),
    "minicpm5": (["<function name=", "</function>"], '<function name="x"><param name="y">', None,
                 '<function name="get_weather"><param name="city">Paris</param><param name="unit">celsius</param>'
                 '<param name="days">3</param></function>'),
    "muse_spark": (["<atem:function_calls>", "</atem:function_calls>"], "<atem:function_calls>", None,
                   '<atem:function_calls><atem:invoke name="get_weather"><atem:parameter name="city">"Paris"'
                   '</atem:parameter><atem:parameter name="unit">"celsius"</atem:parameter><atem:parameter name="days">3'
                   "</atem:parameter></atem:invoke></atem:function_calls>"),
    "kimi_k2": (["<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", "<|tool_call_begin|>",
                 "<|tool_call_argument_begin|>", "<|tool_call_end|>"], "<|tool_calls_section_begin|>", None,
                f"<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{J}"
                "<|tool_call_end|><|tool_calls_section_end|>"),
    "kimi_k3": (["<|open|>", "<|close|>", "<|sep|>", "<|end_of_msg|>"], "", None,
                '<|open|>tools<|sep|><|open|>call tool="get_weather" index="1"<|sep|><|open|>json type="object"<|sep|>'
                f"{J}<|close|>json<|sep|><|close|>call<|sep|><|close|>tools<|sep|>"),
    "mistral": (["[TOOL_CALLS]", "[ARGS]"], "[TOOL_CALLS]", None, f"[TOOL_CALLS]get_weather[ARGS]{J}"),
    "mistral_v3": (["[TOOL_CALLS]"], "[TOOL_CALLS]", None,
                   f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {J}}}]'),
    "pythonic": (["<|tool_call_start|>", "<|tool_call_end|>"], "<|tool_call_start|>", None,
                 '<|tool_call_start|>[get_weather(city="Paris", unit="celsius", days=3)]<|tool_call_end|>'),
    "function_gemma": (["<start_function_call>", "<end_function_call>", "<escape>"], "<start_function_call>", None,
                       "<start_function_call>call:get_weather{city:<escape>Paris<escape>,unit:<escape>celsius<escape>,"
                       "days:3}<end_function_call>"),
    "gemma4": (["<|tool_call>", "<tool_call|>", Q], "<|tool_call> <tool_call|>", None,
               f"<|tool_call>call:get_weather{{city:{Q}Paris{Q},unit:{Q}celsius{Q},days:3}}<tool_call|>"),
    "longcat": (["<longcat_tool_call>", "</longcat_tool_call>"], "<longcat_tool_call>", None,
                f'<longcat_tool_call>{{"name": "get_weather", "arguments": {J}}}</longcat_tool_call>'),
}
PARSER = {"laguna": "glm47", "mistral_v3": "mistral"}  # the module whose parse_tool_call mlx-lm picks


def request(choice=None) -> GenerationRequest:
    return GenerationRequest(None, SamplingParams(), messages=[{"role": "user", "content": "Weather in Paris?"}],
                             tools=[WEATHER, STOCK], tool_choice=choice)


def _marker_tokenizer(src: Path, dest: Path, markers: list[str], names: str, parser_type: str | None,
                      template: str | None = None):
    """The demo tokenizer with ``markers`` as added special tokens at ids 3.., loaded by mlx-lm."""
    from mlx_lm.tokenizer_utils import load

    tj = json.loads((src / "tokenizer.json").read_text())
    tj = copy.deepcopy(tj)
    by_id = {v: k for k, v in tj["model"]["vocab"].items()}
    for i, content in enumerate(markers, start=3):
        del tj["model"]["vocab"][by_id[i]]
        tj["model"]["vocab"][content] = i
        entry = next(a for a in tj["added_tokens"] if a["id"] == i)
        entry.update(content=content, special=True)
    config = json.loads((src / "tokenizer_config.json").read_text())
    config["chat_template"] = (template or config["chat_template"]) + "{# " + names + " #}"  # what mlx-lm's _infer_tool_parser looks for
    if parser_type:
        config["tool_parser_type"] = parser_type
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "tokenizer.json").write_text(json.dumps(tj))
    (dest / "tokenizer_config.json").write_text(json.dumps(config))
    return load(dest)


_built: dict[str, tuple] = {}


def _family(name: str, demo_model_dir, tmp_path_factory) -> tuple:
    if name not in _built:
        markers, names, parser_type, call = FAMILIES[name]
        tok = _marker_tokenizer(Path(demo_model_dir), tmp_path_factory.mktemp(name), markers, names, parser_type)
        group = constrain(request("get_weather"), tok, None).group  # the engine's own, kept per tokenizer
        _built[name] = (name, tok, group, call)
    return _built[name]


@pytest.fixture(params=sorted(FAMILIES))
def family(request, demo_model_dir, tmp_path_factory):
    return _family(request.param, demo_model_dir, tmp_path_factory)


def _ids(tok, text: str, as_tokens: bool) -> list[int]:
    """``text`` tokenized with its added tokens as tokens, or each spelled out as text."""
    hf = tok._tokenizer
    out: list[int] = []
    for piece in Lark(hf.get_added_vocab()).pieces(text):
        if isinstance(piece, int):
            content = hf.convert_ids_to_tokens(piece)
            out += [piece] if as_tokens else [i for c in content for i in hf.encode(c, add_special_tokens=False)]
        else:
            out += hf.encode(piece, add_special_tokens=False)
    return out


def _accepts(group, spec, ids: list[int]) -> bool:
    m = group.matcher(spec.grammar)
    return m.try_consume_tokens(ids) == len(ids) and not m.is_error()


def _decoded(tok, ids: list[int]) -> str:
    """The text the engine sees (engine/sequence.py: the streaming detokenizer)."""
    detok = tok.detokenizer
    text = ""
    for i in ids:
        detok.add_token(i)
        text += detok.last_segment
    detok.finalize()
    return text + detok.last_segment


def test_mlx_lm_picks_the_family(family):
    name, tok, _, call = family
    assert tok.tool_parser.__module__.endswith("." + PARSER.get(name, name))
    start = Lark(tok._tokenizer.get_added_vocab()).pieces(tok.tool_call_start)
    assert isinstance(start[0], int)  # the marker is an added token in this tokenizer


def test_forced_call_takes_the_marker_as_token_and_as_text(family):
    name, tok, group, call = family
    spec = plan(request("get_weather"), tok)
    assert spec.mode == "call"
    ids = _ids(tok, call, as_tokens=True)
    assert tok._tokenizer.convert_tokens_to_ids(tok.tool_call_start) in ids or name == "kimi_k3"
    assert _accepts(group, spec, ids)
    m = group.matcher(spec.grammar)
    m.consume_tokens(ids)
    assert m.is_accepting()  # the call is complete: only end of sequence may follow
    assert _accepts(group, spec, _ids(tok, call, as_tokens=False))
    assert not _accepts(group, spec, _ids(tok, "Sure! " + call, as_tokens=True))
    assert not _accepts(group, spec, _ids(tok, call.replace("get_weather", "get_stock"), as_tokens=True))
    assert not _accepts(group, spec, _ids(tok, call.replace("celsius", "kelvin"), as_tokens=True))


def test_forced_call_is_read_back_by_the_family_parser(family):
    name, tok, _, call = family
    expected = ARGS if "days" in call else {k: v for k, v in ARGS.items() if k != "days"}  # laguna leaves it out
    for as_tokens in (True, False):
        text = _decoded(tok, _ids(tok, call, as_tokens))
        assert text == call
        c = constrain(request("get_weather"), tok, None)
        shown, reason, calls = c.advance(text, "stop")
        assert shown == "" and reason == "tool_calls"
        assert [(x.name, json.loads(x.arguments)) for x in calls] == [("get_weather", expected)]
    # auto mode reads the same text with mlx-lm's parser through the engine's output parser
    parser = parser_for(tok, request(), [])
    pieces = parser.feed("Let me check. " + text) + parser.finish()
    got = [(v.name, json.loads(v.arguments)) for k, v in pieces if k == "tool_call"]
    assert got == [("get_weather", expected)]
    assert "".join(v for k, v in pieces if k == "text").strip() == "Let me check."


def test_auto_mode_trigger_fires_on_the_marker_token_and_its_text(family):
    name, tok, group, call = family
    spec = plan(request(), tok)
    assert spec.mode == "lazy"
    free = "Let me check that for you. {braces} <b>tags</b> "
    assert _accepts(group, spec, _ids(tok, free, True))
    for as_tokens in (True, False):
        assert _accepts(group, spec, _ids(tok, free, True) + _ids(tok, call, as_tokens) + _ids(tok, " Done.", True))
        opened = _ids(tok, free, True) + _ids(tok, tok.tool_call_start, as_tokens)
        assert _accepts(group, spec, opened)
        assert not _accepts(group, spec, opened + _ids(tok, "@@ not a call", True))  # the trigger fired
        wrong = call.replace("celsius", "kelvin")
        assert not _accepts(group, spec, _ids(tok, free, True) + _ids(tok, wrong, as_tokens))


def test_auto_mode_leaves_other_added_tokens_to_the_model(demo_model_dir, tmp_path_factory):
    name, tok, group, call = _family("json_tools", demo_model_dir, tmp_path_factory)  # it has <think> too
    spec = plan(request(), tok)
    assert _accepts(group, spec, _ids(tok, "<think>\nweather?\n</think>\n" + call, True))


def test_kimi_k3_structure_stays_free_while_its_tools_block_is_constrained(demo_model_dir, tmp_path_factory):
    """Kimi K3's marker begins with <|open|>, which also opens its think and response blocks."""
    name, tok, group, call = _family("kimi_k3", demo_model_dir, tmp_path_factory)
    spec = plan(request(), tok)
    think = "<|open|>think<|sep|>The user wants weather.<|close|>think<|sep|><|open|>response<|sep|>Checking."
    assert _accepts(group, spec, _ids(tok, think + "<|close|>response<|sep|>", True))
    assert _accepts(group, spec, _ids(tok, think + call, True))
    assert not _accepts(group, spec, _ids(tok, think + "<|open|>tools<|sep|><|open|>nonsense", True))


TRICKY = [
    {"type": "object"},  # no properties: any argument names
    {"type": "object", "properties": {}, "additionalProperties": False},  # no arguments at all
    {"type": "object", "$defs": {"Unit": {"enum": ["celsius", "fahrenheit"]}},
     "properties": {"unit": {"$ref": "#/$defs/Unit"}}, "required": ["unit"]},  # pydantic's shape
    {"type": "object", "properties": {"where": {"type": "object", "properties": {"lat": {"type": "number"}}},
                                      "tags": {"type": "array", "items": {"type": "string"}},
                                      "ok": {"type": "boolean"}, "n": {"type": ["integer", "null"]}}},
]


def test_every_format_compiles_the_schemas_agents_send(family):
    name, tok, group, call = family
    tools = [{"type": "function", "function": {"name": f"probe{i}", "parameters": p}} for i, p in enumerate(TRICKY)]
    for choice in ("required", None):
        req = GenerationRequest(None, SamplingParams(), messages=[{"role": "user", "content": "x"}],
                                tools=[*tools, WEATHER], tool_choice=choice)
        m = group.matcher(plan(req, tok).grammar)  # raises EngineError(400) on a grammar llguidance refuses
        assert not m.is_error(), m.get_error()


# A Qwen2.5-style template: the tools in the system prompt, calls in Hermes markup.
HERMES_TEMPLATE = (
    "<|im_start|>system\nYou are a helpful assistant.{% if tools %}\n\n# Tools\n\nYou may call one or more "
    "functions to assist with the user query.\n\n<tools>\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}</tools>"
    "\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}"
    "\n</tool_call>{% endif %}<|im_end|>\n{% for m in messages %}{% if m.role != 'system' %}<|im_start|>{{ m.role }}"
    "\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


LIKED = "The"  # a token the demo model likes to open its answer with: there, <tool_call> takes its id


@pytest.fixture(scope="module")
def marker_model(demo_model_dir, tmp_path_factory) -> Path:
    """The demo model with a tokenizer whose <tool_call> is an added token at the id of a word
    the model likes to start with ("The" moves to <tool_call>'s old slot 3), so the model
    writes the marker as its token, not as text; </tool_call> is id 4. The template is one
    mlx-lm reads as json_tools. Weights are linked, not copied."""
    src = Path(demo_model_dir)
    dest = tmp_path_factory.mktemp("marker-model")
    for name in ("README.md", "config.json", "generation_config.json", "model.safetensors"):  # README: MLX
        (dest / name).symlink_to((src / name).resolve())
    tok = _marker_tokenizer(src, dest, ["<tool_call>", "</tool_call>"], "<tool_call> tool_call.name", None,
                            HERMES_TEMPLATE)
    tj = json.loads((dest / "tokenizer.json").read_text())
    liked = tj["model"]["vocab"][LIKED]
    tj["model"]["vocab"].update({LIKED: 3, "<tool_call>": liked})
    next(a for a in tj["added_tokens"] if a["id"] == 3)["id"] = liked
    (dest / "tokenizer.json").write_text(json.dumps(tj))
    from mlx_lm.tokenizer_utils import load

    tok = load(dest)
    assert tok.tool_parser.__module__.endswith(".json_tools")
    assert tok._tokenizer.encode("<tool_call>", add_special_tokens=False) == [liked]
    return dest


def test_the_model_writes_the_marker_as_its_token(marker_model):
    """The server test below goes through the token path: under the forced-call mask, the
    model's first token is the marker token, not the text "<"."""
    import mlx.core as mx
    from mlx_lm import load

    from mlxk.engine.constraints import apply_mask

    model, tok = load(str(marker_model))
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the weather in Paris?"}],
                                  tools=[WEATHER, STOCK], add_generation_prompt=True)
    c = constrain(request("required"), tok, model.args.vocab_size)
    masked = apply_mask(model(mx.array([ids]))[:, -1, :], mx.array(_mask(c)))
    p = mx.softmax(masked.astype(mx.float32), axis=-1)[0]
    marker = tok._tokenizer.convert_tokens_to_ids("<tool_call>")
    assert p[marker].item() > 0.9, p[marker].item()


def _mask(c):
    """The first token's mask, as engine/constraints.py applies it (one row of 32-bit words)."""
    import numpy as np

    return np.frombuffer(c.matcher.compute_bitmask(), dtype=np.int32)[None, :]


def test_forced_calls_through_the_server_with_marker_tokens(marker_model, tmp_path_factory):
    """The case that answered HTTP 500: every forced call through the official openai client,
    at temperature 1.0, sent at once, is a call of the tool with valid arguments."""
    import openai
    from concurrent.futures import ThreadPoolExecutor

    from tests.serve_fixture import ServerProc

    jsonschema = pytest.importorskip("jsonschema")
    weather, stock = copy.deepcopy(WEATHER), copy.deepcopy(STOCK)  # bounded: a small model at 1.0 rambles on
    weather["function"]["parameters"]["properties"]["city"]["maxLength"] = 24
    weather["function"]["parameters"]["properties"]["days"].update(minimum=1, maximum=14)
    stock["function"]["parameters"]["properties"]["symbol"]["maxLength"] = 8
    srv = ServerProc(marker_model, tmp_path_factory.mktemp("marker-serve"), env={"MLXK_API_KEY": "sk-m"})
    try:
        srv.wait_ready(timeout=300)
        client = openai.OpenAI(base_url=srv.base + "/v1", api_key="sk-m", max_retries=0, timeout=600)
        model = client.models.list().data[0].id

        def ask(choice):
            return client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "What is the weather in Paris?"}],
                tools=[weather, stock], tool_choice=choice, temperature=1.0, max_tokens=160)

        named = {"type": "function", "function": {"name": "get_weather"}}
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(ask, ["required"] * 3 + [named] * 3))
        for i, r in enumerate(answers):
            choice = r.choices[0]
            assert choice.finish_reason == "tool_calls", (choice, srv.log()[-3000:])
            (call,) = choice.message.tool_calls
            tool = weather if call.function.name == "get_weather" else stock
            assert i < 3 or tool is weather
            jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])
        assert "Generation failed" not in srv.log()
    finally:
        srv.stop()


def test_a_forced_call_its_parser_cannot_read_comes_back_as_text(demo_model_dir, tmp_path_factory):
    name, tok, group, call = _family("json_tools", demo_model_dir, tmp_path_factory)
    c = constrain(request("get_weather"), tok, None)
    odd = "<tool_call>\n{not json}\n</tool_call>"
    assert c.advance(odd, "stop") == (odd, "stop", [])
