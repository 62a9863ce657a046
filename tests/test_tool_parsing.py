"""Tool calls and reasoning out of the model's text (engine/output_parsing.py, engine/tool_prompt.py).

Real mlx-lm tokenizers: the demo model's (no tool support: the fallback format) and a small
one whose template and vocabulary are Qwen's (mlx-lm picks its json_tools parser and the
``<think>`` markers).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlxk.engine import tool_prompt
from mlxk.engine.output_parsing import Markup, OutputParser, parser_for
from mlxk.engine.requests import GenerationRequest, SamplingParams

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
         {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}]
QWEN_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools><|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{% if m.tool_calls %}{% for tool_call in m.tool_calls %}{% set tool_call = tool_call.function %}<tool_call>\n"
    "{\"name\": \"{{ tool_call.name }}\", \"arguments\": {{ tool_call.arguments | tojson }}}\n</tool_call>"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)


def request(tools=TOOLS, choice=None, messages=None) -> GenerationRequest:
    return GenerationRequest(None, SamplingParams(), messages=messages or [{"role": "user", "content": "hi"}],
                             tools=tools, tool_choice=choice)


def run(parser: OutputParser, text: str, step: int = 1) -> list:
    """Feed ``text`` ``step`` characters at a time, as a stream would."""
    pieces = []
    for i in range(0, len(text), step):
        pieces += parser.feed(text[i:i + step])
    pieces += parser.finish()
    merged: list = []
    for kind, value in pieces:
        if merged and kind != "tool_call" and merged[-1][0] == kind:
            merged[-1] = (kind, merged[-1][1] + value)
        else:
            merged.append((kind, value))
    return merged


def json_markup(think: bool = True) -> Markup:
    return Markup(("<think>", "</think>") if think else None, ("<tool_call>", "</tool_call>"), tool_prompt.parse_call)


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_markup_never_reaches_the_text_and_calls_keep_order_and_ids(step):
    out = run(OutputParser(json_markup(), TOOLS),
              '<think>plan it</think>Let me look.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
              '</tool_call><tool_call>{"name": "get_time", "arguments": {}}</tool_call>', step)
    kinds = [k for k, _ in out]
    assert kinds == ["reasoning", "text", "tool_call", "tool_call"]
    assert out[0][1] == "plan it" and out[1][1] == "Let me look."
    first, second = out[2][1], out[3][1]
    assert (first.name, json.loads(first.arguments)) == ("get_weather", {"city": "Paris"})
    assert second.name == "get_time" and first.id != second.id and first.id.startswith("call_")


def test_a_call_that_does_not_parse_comes_back_as_text():
    out = run(OutputParser(json_markup(False), TOOLS), 'A<tool_call>{"name": get_weather}</tool_call>B', 2)
    assert out == [("text", 'A<tool_call>{"name": get_weather}</tool_call>B')]


def test_a_call_to_a_tool_never_offered_is_text():
    out = run(OutputParser(json_markup(False), TOOLS), '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>')
    assert out[0][0] == "text" and "rm_rf" in out[0][1]


def test_an_unclosed_call_at_the_end_is_still_read():
    parser = OutputParser(json_markup(False), TOOLS)
    out = run(parser, '<tool_call>{"name": "get_time", "arguments": {}}')
    assert [k for k, _ in out] == ["tool_call"] and parser.calls == 1


def test_a_half_marker_at_the_end_is_text():
    assert run(OutputParser(json_markup(False), TOOLS), "the end <tool_") == [("text", "the end <tool_")]


@pytest.mark.parametrize("step", [1, 4, 1000])
@pytest.mark.parametrize("answer", [
    '{"name": "get_weather", "arguments": {"city": "Paris"}}',
    '  ```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
    '[{"name": "get_weather", "arguments": {"city": "Paris"}}]',
])
def test_a_bare_call_without_markers_is_a_call(answer, step):
    """Qwen2.5-Coder-0.5B answers with the call alone, no <tool_call> tags."""
    parser = OutputParser(json_markup(False), TOOLS)
    out = run(parser, answer, step)
    assert [k for k, _ in out] == ["tool_call"] and parser.calls == 1, out
    assert (out[0][1].name, json.loads(out[0][1].arguments)) == ("get_weather", {"city": "Paris"})


@pytest.mark.parametrize("answer", [
    '{"name": "get_weather"}',                                   # no arguments: not a call
    '{"name": "rm_rf", "arguments": {}}',                        # a tool never offered
    '{"name": "get_weather", "arguments": {"city": "Paris"}} and more',
    '```python\nprint(1)\n```',
    '{"city": "Paris"}',
])
def test_json_that_is_not_a_bare_call_stays_text(answer):
    parser = OutputParser(json_markup(False), TOOLS)
    assert run(parser, answer, 3) == [("text", answer)] and parser.calls == 0


def test_plain_text_streams_at_once_while_tools_are_offered():
    parser = OutputParser(json_markup(False), TOOLS)
    assert parser.feed("Sure") == [("text", "Sure")]
    held = OutputParser(json_markup(False), TOOLS)
    assert held.feed('{"na') == []  # may still become a call: held to the end
    assert run(OutputParser(json_markup(False), None), '{"name": "get_time", "arguments": {}}') == [
        ("text", '{"name": "get_time", "arguments": {}}')]  # no tools offered: never held, never a call


@pytest.fixture(scope="module")
def demo_tok(demo_model_dir):
    from mlx_lm.tokenizer_utils import load

    return load(Path(demo_model_dir))


@pytest.fixture(scope="module")
def qwen_tok(tmp_path_factory):
    """A small BPE tokenizer with Qwen's specials and a template mlx-lm reads as json_tools."""
    from mlx_lm.tokenizer_utils import load
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    dest = tmp_path_factory.mktemp("qwen-tok")
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "</tool_call>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["hello world, the weather in Paris"] * 5, trainer=trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = QWEN_TEMPLATE
    fast.save_pretrained(str(dest))
    return load(dest)


def test_mlx_lm_parser_is_used_where_the_template_has_tools(qwen_tok):
    from mlxk.engine.prompting import tokenize_request

    req = request()
    assert tool_prompt.native_tools(qwen_tok)
    prompt, _ = tokenize_request(qwen_tok, tool_prompt.prepare(qwen_tok, req), False)
    assert "get_weather" in qwen_tok.decode(prompt)  # the template rendered the tools
    parser = parser_for(qwen_tok, req, prompt)
    assert parser.markup.initial == "reasoning"  # the template opened <think>
    out = run(parser, 'hmm</think>ok<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>')
    assert [k for k, _ in out] == ["reasoning", "text", "tool_call"]


def test_past_calls_reach_a_native_template_as_objects(qwen_tok):
    msgs = [{"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    prepared = tool_prompt.prepare(qwen_tok, request(messages=msgs))
    assert prepared.messages[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Oslo"}


def test_fallback_for_a_template_without_tools(demo_tok):
    from mlxk.engine.prompting import tokenize_request

    assert not tool_prompt.native_tools(demo_tok)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "weather in Oslo?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "c2", "content": "12:00"}]
    prepared = tool_prompt.prepare(demo_tok, request(messages=msgs, choice="get_weather"))
    assert prepared.tools is None and prepared.messages[0]["content"].startswith("Be brief.\n\n# Tools")
    assert "You must call the function get_weather" in prepared.messages[0]["content"]
    assert prepared.messages[2]["content"] == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    assert prepared.messages[3] == {"role": "user", "content": "<tool_response>\nsunny\n</tool_response>\n"
                                                               "<tool_response>\n12:00\n</tool_response>"}
    prompt, _ = tokenize_request(demo_tok, prepared, False)
    text = demo_tok.decode(prompt)
    assert '"name": "get_weather"' in text and "<tools>" in text
    parser = parser_for(demo_tok, request(), prompt)
    out = run(parser, 'Sure.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>')
    assert [k for k, _ in out] == ["text", "tool_call"]


def test_no_tools_no_parsing(demo_tok):
    assert parser_for(demo_tok, request(tools=None), [1, 2]) is None
    assert parser_for(demo_tok, request(choice="none"), [1, 2]) is None
    assert tool_prompt.prepare(demo_tok, request(choice="none")).tools is None
