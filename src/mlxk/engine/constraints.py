"""Structured output: grammar-constrained decoding with llguidance, per sequence, batched.

One protocol-neutral entry point: a :class:`GenerationRequest` whose ``output_format`` asks
for JSON, or whose ``tool_choice`` forces a tool call, gets a :class:`Constraint` from
:func:`constrain`. The constraint wraps the sequence's sampler and adds a logits processor;
mlx-lm calls both row by row inside its batched step, so constrained and free sequences
share one batch.

Why the token is consumed in the processor, not after the step: mlx-lm samples one token
ahead (step N+1's graph is built, with its logits processors, before token N is handed
back). So the mask for N+1 must already know token N. The sampler wrapper keeps each
row's (lazy) sampled token; the first constrained processor of a step starts the forward
pass (``mx.async_eval``), then reads every pending token, consumes them and fills all
constrained rows' masks in one parallel llguidance call while the model runs. The masks
are applied with plain ``mx`` operations (bit unpacking and ``where``), which every MLX
backend has; llguidance's own MLX helper is a Metal kernel, absent on CPU and CUDA.

Schemas are checked without a tokenizer by :func:`check` (adapters call it to refuse a bad
schema with their own field names); compiled grammars are cached per model by grammar
text, which embeds the canonical JSON of the schema (key order kept: llguidance emits
properties in the schema's order). Tool calls are written in each model's own format, its
marker accepted as the added token it is and as text: engine/tool_formats.py.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

from mlxk.engine import tool_formats as tf
from mlxk.engine.output_parsing import read_calls
from mlxk.engine.requests import EngineError, GenerationRequest, ToolCall
from mlxk.engine.tool_formats import JSON_OPTIONS, TOOL_OPTIONS
from mlxk.engine.tool_prompt import native_tools, parse_call

CACHE_SIZE = 64
log = logging.getLogger("mlxk.engine")
_canonical, _tool_function, _parameters = tf.canonical, tf.function, tf.parameters


class SchemaError(ValueError):
    """A request whose constraint cannot be built. ``field``: "output_format", "tools" (with
    ``index``) or "tool_choice"; each adapter names it in its own wire terms."""

    def __init__(self, message: str, field: str, index: int | None = None):
        super().__init__(message)
        self.message, self.field, self.index = message, field, index


@dataclass(frozen=True)
class Spec:
    """What one request is constrained to: ``mode`` "json", "call" (forced tool call) or
    "lazy" (free text until the model opens a call); ``grammar`` is llguidance's text;
    ``read`` turns a forced call's text into its calls."""

    mode: str
    grammar: str
    read: Callable[[str], list[ToolCall]] | None = field(default=None, compare=False)


def _json_grammar(schema: dict, field: str = "output_format", index: int | None = None,
                  options: dict = JSON_OPTIONS) -> str:
    try:
        return _llg().LLMatcher.grammar_from_json_schema(_canonical(schema), overrides=options)
    except ValueError as exc:
        raise SchemaError(f"Invalid JSON schema: {exc}", field, index) from None


_added_tokens: "weakref.WeakKeyDictionary[Any, dict[str, int]]" = weakref.WeakKeyDictionary()


def _added(tok: Any) -> dict[str, int]:
    """The tokenizer's added tokens (text -> id): llguidance sees each as a token, never text."""
    try:
        return _added_tokens[tok]
    except (KeyError, TypeError):
        pass
    hf = getattr(tok, "_tokenizer", tok)
    try:
        added = {t.content: i for i, t in hf.added_tokens_decoder.items() if t.content}
    except AttributeError:
        added = {}
    try:
        _added_tokens[tok] = added
    except TypeError:
        pass
    return added


def _format(tok: Any) -> tuple[tf.Format | None, Callable, tf.Lark]:
    """How ``tok``'s model writes a call: its mlx-lm family's format, or the fallback one
    (a model without native tools was told about it in the prompt). None: a native family
    without an entry here (forced calls then use the fallback format, auto stays free)."""
    g = tf.Lark(_added(tok) if tok is not None else None)
    if tok is not None and native_tools(tok):
        return tf.FORMATS.get(tf.family(tok) or ""), tok.tool_parser, g
    return tf.HERMES, parse_call, g


def _reader(fmt: tf.Format, parse: Callable, tools: list[dict]) -> Callable[[str], list[ToolCall]]:
    def read(text: str) -> list[ToolCall]:
        at = text.find(fmt.start)
        if at < 0:
            return []
        body = text[at + len(fmt.start):]
        if fmt.end and fmt.end in body:
            body = body[:body.rfind(fmt.end)]
        return read_calls(parse, body, tools) or []

    return read


_checked: OrderedDict[str, str] = OrderedDict()  # grammar text -> "" or the error, without a tokenizer
_checked_lock = threading.Lock()  # adapters check on the event loop, the engine on its own thread


def _grammar_error(grammar: str) -> str:
    with _checked_lock:
        known = _checked.get(grammar)
        if known is not None:
            _checked.move_to_end(grammar)
            return known
    error = _llg().LLMatcher.validate_grammar(grammar)
    with _checked_lock:
        _checked[grammar] = error
        if len(_checked) > CACHE_SIZE:
            _checked.popitem(last=False)
    return error


def plan(req: GenerationRequest, tok: Any = None) -> Spec | None:
    """The constraint ``req`` asks for, or None for free text. Raises :class:`SchemaError`.

    A forced tool call (``tool_choice`` "required" or a tool's name) is exactly one call
    (small models, free to add more, repeat theirs until max_tokens); it wins over an output
    format; "auto" (with the model's ``tok`` known) constrains a call's arguments (a lazy
    grammar: text is free until the model opens a call, by its marker token or text). Calls
    are written in the model's own format (engine/tool_formats.py); "none" never constrains.
    """
    tools = [t for t in (req.tools or []) if _tool_function(t).get("name")]
    choice = req.tool_choice
    if choice not in (None, "auto", "none", "required") and not any(_tool_function(t)["name"] == choice for t in tools):
        raise SchemaError(f"tool_choice names '{choice}', which is not among the tools", "tool_choice")
    if choice == "required" and not tools:
        raise SchemaError("tool_choice 'required' needs at least one tool", "tool_choice")
    for i, t in enumerate(req.tools or []):
        if _tool_function(t).get("name"):
            err = _grammar_error(_json_grammar(_parameters(t), "tools", i, TOOL_OPTIONS))
            if err:
                raise SchemaError(f"Invalid parameters schema for tool '{_tool_function(t)['name']}': {err}", "tools", i)
    if tools and choice not in (None, "auto", "none"):
        chosen = tools if choice == "required" else [t for t in tools if _tool_function(t)["name"] == choice]
        form, parse, g = _format(tok)
        if form is None:
            form, parse = tf.HERMES, parse_call
        grammar = _llg().LLMatcher.grammar_from_lark(tf.forced_grammar(form, g, chosen))
        return Spec("call", grammar, _reader(form, parse, chosen))
    fmt = req.output_format
    if fmt is not None and fmt.kind in ("json_object", "json_schema"):
        schema = fmt.schema if fmt.kind == "json_schema" and fmt.schema is not None else {"type": "object"}
        grammar = _json_grammar(schema)
        err = _grammar_error(grammar)
        if err:
            raise SchemaError(f"Invalid JSON schema: {err}", "output_format")
        return Spec("json", grammar)
    if fmt is not None and fmt.kind != "text":
        raise SchemaError(f"Unknown output format '{fmt.kind}'", "output_format")
    if tools and choice in (None, "auto") and tok is not None and req.messages is not None:
        form, _, g = _format(tok)
        if form is not None:
            from mlxk.engine.loader import eos_token_ids

            lark = tf.lazy_grammar(form, g, tools, set(eos_token_ids(tok, {})))
            return Spec("lazy", _llg().LLMatcher.grammar_from_lark(lark))
    return None


def check(req: GenerationRequest) -> None:
    """Refuse a request whose schema or tool_choice cannot be compiled (no model needed)."""
    plan(req, None)


def _llg():
    import llguidance

    return llguidance


# --- per model: tokenizer view, compiled grammars, masks ------------------------------------

_models: "weakref.WeakKeyDictionary[Any, Constraints]" = weakref.WeakKeyDictionary()


def constrain(req: GenerationRequest, tokenizer: Any, vocab_size: int | None) -> "Constraint | None":
    """The constraint for ``req`` on the model whose mlx-lm ``tokenizer`` is given, or None.

    Raises EngineError(400) when the request's grammar cannot be built.
    """
    if req.output_format is None and not req.tools:
        return None
    try:
        spec = plan(req, tokenizer)
    except SchemaError as exc:
        raise EngineError(400, exc.message, code="invalid_schema") from None
    if spec is None:
        return None
    group = _models.get(tokenizer)
    if group is None:
        group = _models[tokenizer] = Constraints(tokenizer, vocab_size)
    return group.start(spec)


class Constraints:
    """The constrained sequences of one loaded model, their grammars and their masks."""

    def __init__(self, tokenizer: Any, vocab_size: int | None):
        llg = _llg()
        import llguidance.hf

        from mlxk.engine.loader import eos_token_ids

        hf = getattr(tokenizer, "_tokenizer", tokenizer)
        n_vocab = max(vocab_size or 0, len(hf))
        try:  # about half a second, once per model
            self.llt = llguidance.hf.from_tokenizer(hf, n_vocab=n_vocab, eos_token=sorted(eos_token_ids(tokenizer, {})))
        except ValueError as exc:
            raise EngineError(400, f"Structured output is not available for this model: {exc}") from None
        self.n_vocab = n_vocab
        self.executor = llg.LLExecutor()
        self._compiled: OrderedDict[str, Any] = OrderedDict()  # grammar text -> a fresh matcher to copy
        self._live: weakref.WeakSet[Constraint] = weakref.WeakSet()

    def matcher(self, grammar: str):
        """A new matcher for ``grammar``; compiled once, then copied (microseconds)."""
        fresh = self._compiled.get(grammar)
        if fresh is None:
            fresh = _llg().LLMatcher(self.llt, grammar, log_level=0)
            if fresh.is_error():
                raise EngineError(400, f"Invalid grammar: {fresh.get_error()}", code="invalid_schema")
            self._compiled[grammar] = fresh
            if len(self._compiled) > CACHE_SIZE:
                self._compiled.popitem(last=False)
        self._compiled.move_to_end(grammar)
        return fresh.deep_copy()

    def start(self, spec: Spec) -> "Constraint":
        c = Constraint(self, spec, self.matcher(spec.grammar))
        self._live.add(c)
        return c

    def fill(self, logits) -> None:
        """Consume every constrained row's pending token and compute the next masks, together.

        Called by the first constrained processor of a step; ``logits`` (that row's) is
        started first so the forward pass runs while llguidance works.
        """
        import mlx.core as mx
        import llguidance.numpy as lnp

        mx.async_eval(logits)
        due = [c for c in self._live if c.mask is None]
        pending = [c for c in due if c.pending is not None]
        if pending:
            mx.eval([c.pending for c in pending])
            pairs = [(c.matcher, int(c.pending.reshape(-1)[0].item())) for c in pending]
            for c in pending:
                c.pending = None
            lnp.consume_token_par(self.executor, pairs)
        bitmask = lnp.allocate_token_bitmask(len(due), self.n_vocab)
        lnp.fill_next_token_bitmask_par(self.executor, [(c.matcher, i) for i, c in enumerate(due)], bitmask)
        words = mx.array(bitmask)
        for i, c in enumerate(due):
            c.mask = words[i:i + 1]


def apply_mask(logits, words):
    """``logits`` (1, V) with every token whose bit is 0 in ``words`` (1, ceil(V/32)) at -inf."""
    import mlx.core as mx

    bits = (words[:, :, None] >> mx.arange(32, dtype=mx.int32)) & 1
    allowed = bits.reshape(words.shape[0], -1)[:, :logits.shape[-1]].astype(mx.bool_)
    return mx.where(allowed, logits, -float("inf"))


class Constraint:
    """One sequence's grammar state: a sampler wrapper and a logits processor for mlx-lm,
    and :meth:`advance` for the engine after each token it hands back."""

    def __init__(self, group: Constraints, spec: Spec, matcher):
        self.group, self.spec, self.matcher = group, spec, matcher
        self.pending = None  # the token sampled last step (lazy), not yet consumed
        self.mask = None  # the next token's mask, (1, words)
        self._held = ""  # a forced call's text: it becomes tool_call events, never answer text

    @property
    def mode(self) -> str:
        return self.spec.mode

    def wrap(self, sampler: Callable, processors: list[Callable]) -> tuple[Callable, list[Callable]]:
        """The sequence's sampler and processors, with this constraint's mask applied last."""
        def sample(logprobs):
            token = sampler(logprobs)
            self.pending, self.mask = token, None
            return token

        return sample, [*processors, self.process]

    def process(self, tokens, logits):
        if self.mask is None:
            self.group.fill(logits)
        return apply_mask(logits, self.mask)

    def done(self) -> bool:
        """The grammar is complete (only end-of-sequence may follow)."""
        return self.matcher.is_stopped()

    def advance(self, text: str, reason: str | None) -> tuple[str, str | None, list[ToolCall]]:
        """After a token: the text to show, the finish reason and any finished tool calls.

        A complete grammar ends the sequence with "stop"; a forced call holds its text back
        and ends with "tool_calls" and the calls it wrote.
        """
        if self.matcher.is_error():
            raise RuntimeError(f"grammar state: {self.matcher.get_error()}")
        if reason is None and self.done():
            reason = "stop"
        if self.mode != "call":
            return text, reason, []
        self._held += text
        if reason is None:
            return "", None, []
        calls = self.spec.read(self._held) if self.spec.read is not None else []
        if not calls and reason == "stop":  # complete, yet its parser cannot read it: the text, never dropped
            log.warning("a forced tool call did not parse; returned as text")
            return self._held, reason, []
        return "", ("tool_calls" if calls and reason == "stop" else reason), calls
