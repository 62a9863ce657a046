"""The model's raw text -> answer text, reasoning and tool calls, while it streams.

mlx-lm knows each model family's markup: its tokenizer wrapper says where reasoning begins
and ends (``think_start`` / ``think_end``), where a tool call does (``tool_call_start`` /
``tool_call_end``) and how one is read (``tool_parser``, from ``mlx_lm/tool_parsers/``).
``TextStateMachine`` (mlx_lm.generate) splits the text on those markers and holds back a tail
that may still become one, so markup never reaches the answer. A model whose template has
no tools gets the one fallback format of engine/tool_prompt.py, read back here the same way.

Rules every protocol relies on (``read_calls`` holds them; engine/constraints.py reads a
forced call with it too): a call that fails to parse comes back as text, markers
included (never dropped); calls keep the order the model wrote them in, each with its id;
reasoning is never answer text. Everything here runs on the engine thread.

Small models often answer a request with tools with the call alone and no markers: Qwen2.5-
Coder-0.5B writes ``{"name": "get_weather", "arguments": {...}}`` where its template asks for
``<tool_call>`` tags (as llama.cpp and ollama do, such an answer is read as a call). So while
tools are offered, an answer whose text begins with ``{`` or a code fence is held back to
the end; when the whole of it is a call (or a list of calls) of offered tools it comes back
as calls, otherwise as the text it was. Other answers stream as they come.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from mlxk.engine.requests import GenerationRequest, ToolCall

log = logging.getLogger("mlxk.engine")

Piece = tuple[str, Any]  # ("text", str) | ("reasoning", str) | ("tool_call", ToolCall)


@dataclass
class Markup:
    """Where one model's reasoning and tool calls begin and end, and how a call is read."""

    think: tuple[str, str] | None = None
    tool: tuple[str, str | None] | None = None
    parse: Callable[[str, Any], Any] | None = None
    structural: tuple[str, ...] = ()
    extra_transitions: dict | None = None  # a response format's own states (mlx-lm's response_transitions)
    initial: str = "normal"

    def transitions(self) -> dict[str, list[tuple[str, str]]]:
        """As mlx_lm.generate.make_text_state_machine builds them, stop words left out (the
        engine's StopMatcher has already cut the text)."""
        out: dict[str, list[tuple[str, str]]] = {"normal": []}
        if self.think:
            out["normal"].append((self.think[0], "reasoning"))
            out["reasoning"] = [(self.think[1], "normal")]
        if self.tool:
            targets = {dst for edges in (self.extra_transitions or {}).values() for _, dst in edges}
            if "tool" not in targets:
                out["normal"].append((self.tool[0], "tool"))
            if self.think:
                out["reasoning"].append((self.tool[0], "tool"))
            out["tool"] = [(self.tool[1], "normal")] if self.tool[1] else []
        for marker in self.structural:
            out["normal"].append((marker, "normal"))
        for state, edges in (self.extra_transitions or {}).items():
            out.setdefault(state, []).extend(edges)
        return out


def markup_for(tok, req: GenerationRequest, prompt: list[int]) -> Markup | None:
    """The markup to read in this request's output (None: plain text, nothing to parse)."""
    from mlxk.engine import tool_prompt

    think = (tok.think_start, tok.think_end) if getattr(tok, "has_thinking", False) else None
    tool = parse = None
    if tool_prompt.tools_wanted(req):
        if tool_prompt.native_tools(tok):
            tool, parse = (tok.tool_call_start, tok.tool_call_end), tok.tool_parser
        else:
            tool, parse = (tool_prompt.CALL_START, tool_prompt.CALL_END), tool_prompt.parse_call
    extra = dict(getattr(tok, "response_transitions", None) or {})
    structural = tuple(getattr(tok, "structural_markers", None) or ())
    if think is None and tool is None and not extra and not structural:
        return None
    initial = "normal"
    if think is not None and prompt:
        try:  # the template opened a think block the model is to continue
            if tok.rfind_think_start(prompt) > tok.rfind_think_end(prompt):
                initial = "reasoning"
        except Exception:  # a wrapper without the token finders: start in the answer
            pass
    initial = getattr(tok, "response_initial_state", None) or initial
    return Markup(think, tool, parse, structural, extra or None, initial)


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


class OutputParser:
    """Feed it the text the engine may show; get back pieces of answer, reasoning, tool calls."""

    def __init__(self, markup: Markup, tools: list[dict] | None, bare_calls: bool = True):
        from mlx_lm.generate import TextStateMachine

        self.markup = markup
        self.tools = tools
        self._sm = TextStateMachine(markup.transitions())
        self._state = self._sm.make_state(markup.initial)
        self._tool_text = ""
        self.calls = 0
        self._held: str | None = "" if bare_calls and tools and markup.tool else None  # the answer's first text while it may be a bare call

    @property
    def in_tool_call(self) -> bool:
        return self._state[0] == "tool"

    def feed(self, text: str) -> list[Piece]:
        from mlx_lm.generate import TextStateMachine

        if not text or self._state[0] is None:
            return []
        self._state, segments = TextStateMachine.split(self._state, text)
        return self._hold(self._pieces(segments))

    def finish(self) -> list[Piece]:
        """The end of the output: the held-back tail, and a call the model left open."""
        from mlx_lm.generate import TextStateMachine

        if self._state[0] is None:
            return []
        self._state, rest, current = TextStateMachine.flush(self._state)
        out = self._pieces([(current, rest)]) if rest else []
        if self._state[0] == "tool" and self._tool_text:
            out += self._close_call()
        out = self._hold(out)
        if self._held is not None:
            held, self._held = self._held, None
            calls = read_calls(_bare_calls, held, self.tools)
            self.calls += len(calls or [])
            out += [("tool_call", c) for c in calls] if calls else [("text", held)] if held else []
        return _merged(out)

    def _hold(self, pieces: list[Piece]) -> list[Piece]:
        """Keep the answer's text back while it still looks like a bare call (see the module doc)."""
        if self._held is None:
            return pieces
        out: list[Piece] = []
        for i, (kind, value) in enumerate(pieces):
            if kind == "text":
                self._held += value
                head = self._held.lstrip()
                if not head or head.startswith(("{", "[", "`")) and _may_be_call(head):
                    continue
            elif kind == "reasoning":
                out.append((kind, value))
                continue
            released, self._held = self._held, None
            out += ([("text", released)] if released else []) + ([] if kind == "text" else [(kind, value)])
            return out + pieces[i + 1:]
        return out

    def _pieces(self, segments: list[tuple[str | None, str]]) -> list[Piece]:
        out: list[Piece] = []
        for i, (state, chunk) in enumerate(segments):
            if state == "tool":
                self._tool_text += chunk
                if i < len(segments) - 1:  # the call's end marker came: read it
                    out += self._close_call()
            elif state == "reasoning":
                if chunk:
                    out.append(("reasoning", chunk))
            elif chunk:
                out.append(("text", chunk))
        return _merged(out)

    def _close_call(self) -> list[Piece]:
        raw, self._tool_text = self._tool_text, ""
        calls = self._parse(raw)
        if calls is None:  # returned as the text the model wrote, markers and all
            start, end = self.markup.tool or ("", "")
            log.warning("a tool call did not parse; returned as text")
            return [("text", f"{start}{raw}{end or ''}")]
        self.calls += len(calls)
        return [("tool_call", c) for c in calls]

    def _parse(self, raw: str) -> list[ToolCall] | None:
        return read_calls(self.markup.parse, raw, self.tools)


def read_calls(parse: Callable[[str, Any], Any] | None, raw: str, tools: list[dict] | None) -> list[ToolCall] | None:
    """The calls in ``raw`` (the text between a call's markers) read by ``parse`` (mlx-lm's
    parser for the family, or the fallback format's), or None where it is not a call of
    an offered tool with an object of arguments."""
    if not raw.strip() or parse is None:
        return None
    try:
        parsed = parse(raw, tools)
    except Exception:  # each parser raises its own kinds (ValueError, KeyError, IndexError, ...)
        return None
    names = {(t.get("function") or t).get("name") for t in tools or []}
    calls = []
    for item in parsed if isinstance(parsed, list) else [parsed]:
        name = item.get("name") if isinstance(item, dict) else None
        args = item.get("arguments", {}) if isinstance(item, dict) else None
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                return None
        if not isinstance(name, str) or not name or not isinstance(args, dict):
            return None
        if names and name not in names:
            return None  # a tool the request never offered: the text is the answer
        calls.append(ToolCall(item.get("id") or new_call_id(), name, json.dumps(args, ensure_ascii=False)))
    return calls or None


_FENCE_OPEN = ("```json", "```")


def _may_be_call(head: str) -> bool:
    """Whether text that begins so can still turn out to be a bare call (fences: json only)."""
    if head.startswith("`"):
        return any(f.startswith(head[:len(f)]) or head.startswith(f) for f in _FENCE_OPEN)
    return True


def _bare_calls(raw: str, _tools: Any) -> Any:
    """A bare call as JSON, in a code fence or not (``read_calls`` checks its shape)."""
    text = raw.strip()
    for fence in _FENCE_OPEN:
        if text.startswith(fence) and text.endswith("```") and len(text) > len(fence) + 3:
            text = text[len(fence):-3].strip()
            break
    parsed = json.loads(text)
    if not all(isinstance(c, dict) and {"name", "arguments"} <= set(c) for c in
               (parsed if isinstance(parsed, list) else [parsed])):
        raise ValueError("not a call: each item needs a name and arguments")
    return parsed


def _merged(pieces: list[Piece]) -> list[Piece]:
    """Neighbouring text (or reasoning) pieces as one."""
    out: list[Piece] = []
    for kind, value in pieces:
        if out and kind != "tool_call" and out[-1][0] == kind:
            out[-1] = (kind, out[-1][1] + value)
        else:
            out.append((kind, value))
    return out


def parser_for(tok, req: GenerationRequest, prompt: list[int]) -> OutputParser | None:
    if req.messages is None:  # plain completions are raw text
        return None
    markup = markup_for(tok, req, prompt)
    # forced calls are the grammar's (engine/constraints.py): only auto mode looks for bare calls
    return OutputParser(markup, req.tools, req.tool_choice in (None, "auto")) if markup else None
