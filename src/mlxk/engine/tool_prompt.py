"""Tools on the way in: through the model's chat template, or in the one fallback format.

A template that knows tools (mlx-lm found a parser for it: ``tokenizer.has_tool_calling``)
gets them as ``tools=`` and renders past calls and results itself. Any other model is told
about the tools in its system prompt in one documented format (the Hermes / Qwen one that
small models have seen most) and engine/output_parsing.py reads it back:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Past calls become that text in the assistant's message, and results come back as a user
message wrapped in ``<tool_response>`` tags. ``tool_choice`` "none" takes the tools away;
"required" or a tool's name is said in the prompt too (the engine's grammar, where a
request carries one, enforces it).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from mlxk.engine.requests import GenerationRequest

CALL_START, CALL_END = "<tool_call>", "</tool_call>"

FALLBACK_INTRO = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}}\n</tool_call>"
)


def tools_wanted(req: GenerationRequest) -> bool:
    return bool(req.tools) and req.tool_choice != "none"


def native_tools(tok) -> bool:
    """True when mlx-lm knows how this model writes a call (and so its template takes tools)."""
    return bool(getattr(tok, "has_tool_calling", False) and getattr(tok, "tool_parser", None))


def parse_call(text: str, tools: Any = None) -> dict:
    """The fallback format's call: one JSON object with ``name`` and ``arguments``."""
    return json.loads(text.strip())


def _args_object(arguments: Any) -> Any:
    """Templates read a past call's arguments as an object; the wire carries JSON text."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return arguments
    return arguments


def _demand(req: GenerationRequest) -> str:
    if req.tool_choice == "required":
        return "\n\nYou must call at least one of these functions in your answer."
    if req.tool_choice and req.tool_choice not in ("auto", "none", "required"):
        return f"\n\nYou must call the function {req.tool_choice} in your answer."
    return ""


def _text(content: Any) -> str:
    from mlxk.engine.prompting import text_of

    return text_of(content)


def prepare(tok, req: GenerationRequest) -> GenerationRequest:
    """The request as the chat template is to see it (a copy; ``req`` is left as it was)."""
    if req.messages is None:
        return req
    if not tools_wanted(req):
        return replace(req, tools=None, messages=[_native(m) for m in req.messages]) if req.tools else req
    if native_tools(tok):
        return replace(req, messages=[_native(m) for m in req.messages])
    return replace(req, tools=None, messages=fallback_messages(req))


def _native(m: dict) -> dict:
    if not m.get("tool_calls"):
        return m
    calls = []
    for c in m["tool_calls"]:
        fn = dict(c.get("function") or {})
        fn["arguments"] = _args_object(fn.get("arguments"))
        calls.append({**c, "function": fn})
    return {**m, "tool_calls": calls}


def fallback_messages(req: GenerationRequest) -> list[dict]:
    listing = "\n".join(json.dumps(t, ensure_ascii=False) for t in req.tools or [])
    intro = FALLBACK_INTRO.format(tools=listing) + _demand(req)
    out: list[dict] = []
    for m in req.messages or []:
        role = m.get("role")
        if role == "tool":
            block = f"<tool_response>\n{_text(m.get('content'))}\n</tool_response>"
            if out and out[-1].get("_tool_results"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "_tool_results": True})
            continue
        if role == "assistant" and m.get("tool_calls"):
            written = [_text(m.get("content"))] if _text(m.get("content")) else []
            for c in m["tool_calls"]:
                fn = c.get("function") or {}
                call = {"name": fn.get("name"), "arguments": _args_object(fn.get("arguments"))}
                written.append(f"{CALL_START}\n{json.dumps(call, ensure_ascii=False)}\n{CALL_END}")
            out.append({"role": "assistant", "content": "\n".join(written)})
            continue
        out.append({k: v for k, v in m.items() if k not in ("tool_calls", "tool_call_id", "name")})
    for m in out:
        m.pop("_tool_results", None)
    if out and out[0].get("role") == "system":
        out[0] = {**out[0], "content": _text(out[0].get("content")) + "\n\n" + intro}
    else:
        out.insert(0, {"role": "system", "content": intro})
    return out
