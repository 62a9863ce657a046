"""How each model family writes a tool call, as llguidance grammar: one entry per mlx-lm parser.

A forced call (``tool_choice`` required or a tool's name) is written in the model's own
format, so the model writes what it was trained on and mlx-lm's parser for that family
(``mlx_lm/tool_parsers/``, chosen by its TokenizerWrapper) reads it back; a model without
native tools gets engine/tool_prompt.py's fallback format (Hermes). Every literal of a format
(``<tool_call>``, ``[ARGS]``, ``<|"|>``, ...) is accepted both as the tokenizer's added token
(lark ``<[id]>``) and as text: Qwen2.5 writes ``<tool_call>`` as the single token 151657, and a
grammar that knew only the text refused it.

Where a format carries JSON (Hermes, Kimi, Mistral, LongCat, pythonic values, Muse Spark
values, Kimi K3's JSON block) the arguments are constrained by the tool's JSON schema. The
key/value formats (qwen3_coder, glm47, minimax_m2, minicpm5, muse_spark, pythonic,
function_gemma, gemma4) are constrained per parameter: names from ``properties`` in schema
order (required ones present, optional ones may be left out, no others; a schema without
properties takes any names), enums as alternatives, integers/numbers/booleans/null by their
syntax, objects and arrays (and Muse Spark's and pythonic's every value) as JSON against
the parameter's schema. What cannot be constrained there: a bare string's own keywords
(pattern, length, format) and bounds of bare numbers, an order other than the schema's,
``anyOf`` / type lists (written bare, the parser converts them), and a raw string that
contains its format's closing tag (the closer ends the value). function_gemma's parser ends the arguments at the first ``}``
and splits values at ``,``, so its object/array values (written as JSON) and strings with
``}`` cannot be read back; gemma4 reads JSON inside nested values, but its keys are bare.

mlx-lm 0.32.2 has no parser for Llama 3 (``<|python_tag|>``) or gpt-oss (harmony channels):
its TokenizerWrapper finds no tool parser for them, so they get the fallback format (its
markers are text in their tokenizers). In auto mode (a lazy grammar) text is free, with the
tokenizer's other added tokens (``<think>``, channels), until the model opens a call.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any, Callable

# Compact, fixed whitespace: small models otherwise pad JSON with newlines until max_tokens.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
# A tool's parameters describe what the tool accepts; agents send schemas with keywords the
# grammar cannot enforce (Claude Code: propertyNames). Those are compiled leniently.
TOOL_OPTIONS = {**JSON_OPTIONS, "lenient": True}

INTEGER = r"/-?(0|[1-9][0-9]*)/"
NUMBER = r"/-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/"
_META = set("\\.+*?()|[]{}^$/")
KEY = "/[A-Za-z_][A-Za-z0-9_]*/"  # a parameter's name where the schema names none


def canonical(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _string(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _regex_text(s: str) -> str:
    return "".join("\\" + c if c in _META else c for c in s)


def function(tool: dict) -> dict:
    return tool.get("function", tool) if isinstance(tool, dict) else {}


def parameters(tool: dict) -> dict:
    params = function(tool).get("parameters")
    return params if isinstance(params, dict) else {"type": "object", "properties": {}}


def _rebased(node: Any, prefix: str) -> Any:
    """``node`` with its local ``$ref`` pointers ("#/...") moved under ``prefix``."""
    if isinstance(node, dict):
        return {k: (prefix + v[1:] if k == "$ref" and isinstance(v, str) and v.startswith("#") else _rebased(v, prefix))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rebased(v, prefix) for v in node]
    return node


def call_schema(tools: list[dict], base: str = "#") -> dict:
    """{"name": ..., "arguments": ...} for any of ``tools`` (Hermes, LongCat, Mistral v3), the
    schema sitting at ``base`` (a parameters schema's own $refs still find its $defs)."""
    def at(i: int) -> str:
        return f"{base}/properties/arguments" if len(tools) == 1 else f"{base}/anyOf/{i}/properties/arguments"

    options = [{"type": "object", "properties": {"name": {"const": function(t).get("name")},
                                                  "arguments": _rebased(parameters(t), at(i))},
                "required": ["name", "arguments"], "additionalProperties": False} for i, t in enumerate(tools)]
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return {**schema, "x-guidance": TOOL_OPTIONS}


@functools.lru_cache(maxsize=16)
def _finder(words: tuple[str, ...]) -> "re.Pattern | None":
    """Longest-first alternation of a tokenizer's added tokens (Gemma has thousands): once per tokenizer."""
    return re.compile("|".join(map(re.escape, words))) if words else None


class Lark:
    """Lark text being built for one tokenizer: literals that may be its added tokens, rules."""

    def __init__(self, added: dict[str, int] | None = None):
        self.added = dict(added or {})
        self.names = {v: k for k, v in self.added.items()}
        self.rules: list[str] = []
        self._find = _finder(tuple(sorted(self.added, key=len, reverse=True)))

    def pieces(self, text: str) -> list[str | int]:
        """``text`` split into added tokens (ids) and plain text."""
        if self._find is None:
            return [text] if text else []
        out: list[str | int] = []
        pos = 0
        for m in self._find.finditer(text):
            if m.start() > pos:
                out.append(text[pos:m.start()])
            out.append(self.added[m.group()])
            pos = m.end()
        if pos < len(text):
            out.append(text[pos:])
        return out

    def lit(self, text: str) -> str:
        """``text`` exactly, each added token in it as the token or as its text."""
        parts = [_string(p) if isinstance(p, str) else f"(<[{p}]> | {_string(self.names[p])})" for p in self.pieces(text)]
        return " ".join(parts)

    def rule(self, body: str, opts: str = "") -> str:
        name = f"r{len(self.rules)}"
        self.rules.append(f"{name}{opts}: {body}")
        return name

    def until(self, closer: str, char: str = "(?s:.)") -> str:
        """Raw text, then ``closer`` (which ends it): the closer as text ends a lazy lexeme; an
        added token that starts the closer ends a greedy one (a token is never text)."""
        lazy = self.rule(f"/{char}*{_regex_text(closer)}/", "[lazy]")
        first = self.pieces(closer)[0]
        if isinstance(first, int):
            rest = closer[len(self.names[first]):]
            return f"(/{char}*/ <[{first}]> {self.lit(rest) if rest else ''} | {lazy})"
        return lazy

    def json(self, schema: dict) -> str:
        return f"%json {canonical({**schema, 'x-guidance': TOOL_OPTIONS})}"

    def text(self) -> str:
        return "".join(r + "\n" for r in self.rules)


def _types(schema: dict) -> set[str]:
    t = schema.get("type")
    return {t} if isinstance(t, str) else set(t) if isinstance(t, list) else set()


def _kind(schema: dict) -> tuple[str, Any]:
    """("enum", strings) | ("string", None) | ("syntax", lark) | ("json", None) | ("any", None)."""
    values = schema["enum"] if isinstance(schema.get("enum"), list) else [schema["const"]] if "const" in schema else None
    if values and all(isinstance(v, str) for v in values):
        return "enum", values
    types = _types(schema)
    if len(types) != 1:
        return "any", None
    (t,) = types
    if t == "string":
        return "string", None
    if t in ("object", "array"):
        return "json", None
    syntax = {"integer": INTEGER, "number": NUMBER, "boolean": '("true" | "false")', "null": '"null"'}.get(t)
    return ("syntax", syntax) if syntax else ("any", None)


def raw_value(g: Lark, schema: dict, closer: str) -> str:
    """A value written bare (strings as they are), then its closing tag: qwen3_coder, glm47,
    minimax_m2, minicpm5 (their parsers convert by the schema's type)."""
    kind, x = _kind(schema)
    if kind == "enum":
        return "(" + " | ".join(map(_string, x)) + f") {g.lit(closer)}"
    if kind == "syntax":
        return f"{x} {g.lit(closer)}"
    if kind == "json":
        return f"{g.json(schema)} {g.lit(closer)}"
    return g.until(closer)


def delimited_value(g: Lark, schema: dict, quote: str, char: str) -> str:
    """A value whose strings sit between ``quote`` tags (gemma4 ``<|"|>``, function_gemma
    ``<escape>``); objects, arrays and anything else as JSON."""
    kind, x = _kind(schema)
    if kind == "enum":
        return f"{g.lit(quote)} (" + " | ".join(map(_string, x)) + f") {g.lit(quote)}"
    if kind == "string":
        return f"{g.lit(quote)} {g.until(quote, char)}"
    if kind == "syntax":
        return x
    return g.json(schema)


def kv_sequence(g: Lark, schema: dict, item: Callable[[str, dict], str], sep: str, extra: str | None) -> str:
    """The parameters of ``schema`` in its order: required ones present, optional ones may be
    left out, ``sep`` between; ``extra`` (any key) where the schema names no properties."""
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    required = set(schema.get("required") or [])
    if not props:
        if extra is None or schema.get("additionalProperties") is False:
            return '""'
        one = g.rule(extra)
        return f"({one} ({_string(sep)} {one})*)?" if sep else f"{one}*"
    defs = {k: schema[k] for k in ("$defs", "definitions") if k in schema}  # a parameter's $ref points there
    items = [(g.rule(item(k, {**v, **defs} if isinstance(v, dict) else {})), k in required) for k, v in props.items()]
    s = f"{_string(sep)} " if sep else ""

    def rest(j: int) -> str:
        return " ".join(f"({s}{name})" + ("" if req else "?") for name, req in items[j:])

    firsts = []
    for i, (name, req) in enumerate(items):
        firsts.append(f"{name} {rest(i + 1)}".strip())
        if req:
            return "(" + " | ".join(firsts) + ")"
    return "(" + " | ".join(firsts) + ")?"


@dataclass(frozen=True)
class Format:
    """One parser family: its markers (mlx-lm's ``tool_call_start`` / ``tool_call_end``) and
    ``body``: the lark expression for what a call writes between them, for any of the tools."""

    family: str
    start: str
    end: str
    body: Callable[[Lark, list[dict]], str]


def _each(fn: Callable[[Lark, str, dict], str]) -> Callable[[Lark, list[dict]], str]:
    """A body that is one of the tools, each by name."""
    def body(g: Lark, tools: list[dict]) -> str:
        alts = [g.rule(fn(g, function(t)["name"], parameters(t))) for t in tools]
        return "(" + " | ".join(alts) + ")"

    return body


def _hermes(g: Lark, tools: list[dict]) -> str:
    return f'"\\n" %json {canonical(call_schema(tools))} "\\n"'


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _params(g: Lark, schema: dict, prefix: str, mid: str, value: Callable[[dict], str], sep: str = "") -> str:
    """Parameters written ``prefix`` KEY ``mid`` VALUE, ``sep`` between (kv_sequence's rules)."""
    item = lambda k, v: _join(g.lit(prefix + k + mid), value(v))
    extra = _join(g.lit(prefix), KEY, g.lit(mid), value({}))
    return kv_sequence(g, schema, item, sep, extra)


def _qwen3_coder(g: Lark, name: str, schema: dict) -> str:
    params = _params(g, schema, "<parameter=", ">\n", lambda v: raw_value(g, v, "\n</parameter>\n"))
    return _join(g.lit(f"\n<function={name}>\n"), params, g.lit("</function>\n"))


def _glm47(g: Lark, name: str, schema: dict) -> str:
    return _join(g.lit(name), _params(g, schema, "<arg_key>", "</arg_key><arg_value>",
                                      lambda v: raw_value(g, v, "</arg_value>")))


def _minimax(g: Lark, name: str, schema: dict) -> str:
    params = _params(g, schema, '<parameter name="', '">', lambda v: raw_value(g, v, "</parameter>\n"))
    return _join(g.lit(f'\n<invoke name="{name}">\n'), params, g.lit("</invoke>\n"))


def _minicpm5(g: Lark, name: str, schema: dict) -> str:
    return _join(g.lit(f'"{name}">'), _params(g, schema, '<param name="', '">', lambda v: raw_value(g, v, "</param>")))


def _muse(g: Lark, name: str, schema: dict) -> str:
    params = _params(g, schema, '<atem:parameter name="', '">', lambda v: _join(g.json(v), g.lit("</atem:parameter>")))
    return _join(g.lit(f'<atem:invoke name="{name}">'), params, g.lit("</atem:invoke>"))


def _kimi_k2(g: Lark, name: str, schema: dict) -> str:
    return (f"{g.lit('<|tool_call_begin|>functions.' + name + ':0<|tool_call_argument_begin|>')} "
            f"{g.json(schema)} {g.lit('<|tool_call_end|>')}")


def _kimi_k3(g: Lark, name: str, schema: dict) -> str:
    head = f'<|open|>call tool={_string(name)} index="1"<|sep|><|open|>json type="object"<|sep|>'
    return f"{g.lit(head)} {g.json(schema)} {g.lit('<|close|>json<|sep|><|close|>call<|sep|>')}"


def _mistral(g: Lark, tools: list[dict]) -> str:
    if "[ARGS]" in g.added:  # v11+ tokenizers: name[ARGS]{...}
        return _each(lambda g, name, schema: f"{_string(name)} {g.lit('[ARGS]')} {g.json(schema)}")(g, tools)
    schema = {"type": "array", "items": call_schema(tools, "#/items"), "minItems": 1, "maxItems": 1}
    return g.json(schema)


def _pythonic(g: Lark, name: str, schema: dict) -> str:
    return _join(g.lit(f"[{name}("), _params(g, schema, "", "=", g.json, ", "), g.lit(")]"))


def _function_gemma(g: Lark, name: str, schema: dict) -> str:
    params = _params(g, schema, "", ":", lambda v: delimited_value(g, v, "<escape>", "[^}]"), ",")
    return _join(g.lit(f"call:{name}{{"), params, g.lit("}"))


def _gemma4(g: Lark, name: str, schema: dict) -> str:
    params = _params(g, schema, "", ":", lambda v: delimited_value(g, v, '<|"|>', "(?s:.)"), ",")
    return _join(g.lit(f"call:{name}{{"), params, g.lit("}"))


def _longcat(g: Lark, tools: list[dict]) -> str:
    return f"%json {canonical(call_schema(tools))}"


HERMES = Format("hermes", "<tool_call>", "</tool_call>", _hermes)

FORMATS: dict[str, Format] = {f.family: f for f in [
    Format("json_tools", "<tool_call>", "</tool_call>", _hermes),
    Format("qwen3_coder", "<tool_call>", "</tool_call>", _each(_qwen3_coder)),
    Format("glm47", "<tool_call>", "</tool_call>", _each(_glm47)),  # laguna imports glm47's parser
    Format("minimax_m2", "<minimax:tool_call>", "</minimax:tool_call>", _each(_minimax)),
    Format("minicpm5", "<function name=", "</function>", _each(_minicpm5)),
    Format("muse_spark", "<atem:function_calls>", "</atem:function_calls>", _each(_muse)),
    Format("kimi_k2", "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", _each(_kimi_k2)),
    Format("kimi_k3", "<|open|>tools<|sep|>", "<|close|>tools<|sep|>", _each(_kimi_k3)),
    Format("mistral", "[TOOL_CALLS]", "", _mistral),
    Format("pythonic", "<|tool_call_start|>", "<|tool_call_end|>", _each(_pythonic)),
    Format("function_gemma", "<start_function_call>", "<end_function_call>", _each(_function_gemma)),
    Format("gemma4", "<|tool_call>", "<tool_call|>", _each(_gemma4)),
    Format("longcat", "<longcat_tool_call>", "</longcat_tool_call>", _longcat),
]}


def family(tok: Any) -> str | None:
    """The mlx-lm parser family of ``tok`` (its parser's module), None without one."""
    parse = getattr(tok, "tool_parser", None)
    module = getattr(parse, "__module__", None) or ""
    return module.rsplit(".", 1)[-1] or None


def forced_grammar(fmt: Format, g: Lark, tools: list[dict]) -> str:
    """Lark for exactly one call of one of ``tools``, from the first token on."""
    body = fmt.body(g, tools)
    end = g.lit(fmt.end) if fmt.end else ""
    return f"start: {g.lit(fmt.start)} {body} {end}\n" + g.text()


def _ranges(ids: list[int]) -> str:
    out: list[str] = []
    for i in sorted(set(ids)):
        if out and i == int(out[-1].rsplit("-", 1)[-1]) + 1:
            out[-1] = f"{out[-1].split('-')[0]}-{i}"
        else:
            out.append(str(i))
    return ",".join(out)


def lazy_grammar(fmt: Format, g: Lark, tools: list[dict], eos: set[int]) -> str:
    """Lark for free text in which each call the model opens is one call of one of ``tools``.

    The call opens on the start marker as its added token (a token is never text, so it
    ends the free text) or as text (a lazy lexeme: it ends at the marker's first
    spelling). Free text may hold the tokenizer's other added tokens (``<think>``, Kimi K3's
    structure); where the marker's first token also starts other structure (Kimi K3's
    ``<|open|>``), that token is free unless the text after it is the marker's.
    """
    body, end = fmt.body(g, tools), (g.lit(fmt.end) if fmt.end else "")
    pieces = g.pieces(fmt.start)
    first = pieces[0] if isinstance(pieces[0], int) else None
    others = [i for i in g.added.values() if i not in eos and i != first]
    trig = [f"trig_text[lazy]: TEXT {_string(fmt.start)}"]
    alts, pre_items, tails = ["trig_text"], [], ["pre TEXT"]
    if first is not None:
        rest = fmt.start[len(g.names[first]):]
        alts.insert(0, f"TEXT <[{first}]> {g.lit(rest) if rest else ''}")
        if rest and isinstance(pieces[1], str) and others:  # the token alone is free, unless the marker's text follows
            trig.append(f"NOT_REST: /(?s:.*)/ & ~/{_regex_text(pieces[1])}/")
            pre_items.append(f"TEXT <[{first}]> NOT_REST other")
            tails.append(f"pre TEXT <[{first}]> NOT_REST")
    if others:
        pre_items.insert(0, "TEXT other")
        trig.append(f"other: <[{_ranges(others)}]>")
    pre = f"pre: ({' | '.join(pre_items)})*" if pre_items else 'pre: ""'
    lines = ["%llguidance {}", "start: call* tail", f"call: pre trig {body} {end}", f"trig: {' | '.join(alts)}",
             *trig, f"tail: {' | '.join(tails)}", pre, "TEXT: /(?s:.*)/"]
    return "\n".join(lines) + "\n" + g.text()
