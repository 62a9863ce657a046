"""Single-stream generation for ``mlxk run``: chat sessions with KV reuse, the server's rules.

Built on mlx-lm's ``stream_generate`` (which owns the decode loop and the prompt cache).
The rules a user can see are the serving engine's, from the same modules: the sampler and
logits processors from engine/sampling.py (one :class:`SamplingParams`), stop strings from
engine/stops.py, the end-of-turn tokens from ``loader.eos_token_ids`` and the chat
template from engine/prompting.py. So a greedy prompt gives the same text here as through
``mlxk serve``. On top, a chat session keeps its KV cache between turns so a turn only
prefills its new tokens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from mlxk.engine.loader import Loaded, eos_token_ids
from mlxk.engine.requests import GenerationRequest, OutputFormat, SamplingParams
from mlxk.engine.sampling import make_logits_processors, make_sampler
from mlxk.engine.stops import StopMatcher

DEFAULT_MAX_TOKENS = 512  # when SamplingParams.max_tokens is None, as in the serving engine


@dataclass
class Chunk:
    text: str


@dataclass
class Stats:
    prompt_tokens: int = 0
    prefilled_tokens: int = 0  # prompt tokens actually run through the model (the rest came from the KV cache)
    generated_tokens: int = 0  # the end-of-turn token not counted
    tokens: list[int] = field(default_factory=list)  # the generated ids, shown or held back (KV bookkeeping)
    prompt_tps: float = 0.0
    generation_tps: float = 0.0
    peak_memory_gb: float = 0.0
    seconds: float = 0.0
    finish_reason: str = "length"


def generate(
    loaded: Loaded,
    prompt_tokens: list[int],
    sampling: SamplingParams,
    stats: Stats,
    prompt_cache: list | None = None,
    cached_prefix: int = 0,
    output_format: OutputFormat | None = None,
) -> Iterator[Chunk]:
    """Stream text for ``prompt_tokens``; ``prompt_cache`` already holds the first ``cached_prefix`` of them.

    ``output_format`` (JSON) constrains the text with engine/constraints.py, as the server does.
    """
    import mlx.core as mx
    from mlx_lm import stream_generate

    # stream_generate ends at the tokenizer's EOS ids: make them the one EOS set (a superset
    # of mlx-lm's: generation_config's ids and the end-of-turn tokens), as the server's are.
    loaded.tokenizer.eos_token_ids = eos_token_ids(loaded.tokenizer, loaded.generation_config)
    stops = StopMatcher(sampling.stop)
    todo = prompt_tokens[cached_prefix:] or prompt_tokens[-1:]
    stats.prompt_tokens = len(prompt_tokens)
    stats.prefilled_tokens = len(todo)
    stats.finish_reason = "length"
    start = time.perf_counter()
    kwargs: dict[str, Any] = {"max_tokens": sampling.max_tokens or DEFAULT_MAX_TOKENS,
                              "sampler": make_sampler(sampling)}
    processors = make_logits_processors(sampling)
    constraint = None
    if output_format is not None:  # structured output: the server's constraint, a batch of one
        from mlxk.engine.constraints import constrain

        vocab = getattr(getattr(loaded.model, "args", None), "vocab_size", None)
        constraint = constrain(GenerationRequest(None, sampling, output_format=output_format), loaded.tokenizer, vocab)
        if constraint is not None:
            kwargs["sampler"], processors = constraint.wrap(kwargs["sampler"], processors)
    if processors:
        kwargs["logits_processors"] = processors
    if prompt_cache is not None:
        kwargs["prompt_cache"] = prompt_cache
    last = None
    for resp in stream_generate(loaded.model, loaded.tokenizer, mx.array(todo), **kwargs):
        # Every response but the last carries one new token. The last one (finish_reason set)
        # carries the detokenizer's remainder and either the EOS token (not shown, not
        # counted) or the max_tokens-th token.
        last = resp
        if resp.finish_reason != "stop":
            stats.generated_tokens += 1
            stats.tokens.append(resp.token)
        text, stopped = stops.feed(resp.text)
        complete = constraint is not None and not stopped and constraint.done()  # the grammar is complete
        if not stopped and (resp.finish_reason is not None or complete):
            text += stops.flush()  # the end: what was held back for a stop string is answer text
        if stopped or complete or resp.finish_reason == "stop":
            stats.finish_reason = "stop"
        if text:
            yield Chunk(text)
        if stopped or complete:
            break
    stats.seconds = time.perf_counter() - start
    if last is not None:
        stats.prompt_tps = last.prompt_tps
        stats.generation_tps = last.generation_tps
        stats.peak_memory_gb = last.peak_memory


def render_prompt(loaded: Loaded, messages: list[dict[str, str]], use_template: bool = True) -> list[int]:
    """The chat template as the server's chat endpoint applies it; plain text without one.

    Without a template (or with ``--no-chat-template``) the messages' text is the prompt,
    as ``/v1/completions`` takes it.
    """
    from mlxk.engine.prompting import tokenize_request

    tok = loaded.tokenizer
    if use_template and (getattr(tok, "has_chat_template", False) or getattr(tok, "chat_template", None)):
        prompt, _ = tokenize_request(tok, GenerationRequest(None, SamplingParams(), messages=messages), False)
        return prompt
    text = "\n".join(m["content"] for m in messages)
    return list(tok.encode(text))


@dataclass
class ChatSession:
    """A conversation whose KV cache survives between turns."""

    loaded: Loaded
    system: str | None = None
    use_template: bool = True
    messages: list[dict[str, str]] = field(default_factory=list)
    _cache: list | None = None
    _cache_tokens: list[int] = field(default_factory=list)

    def reset(self) -> None:
        self.messages.clear()
        self._cache, self._cache_tokens = None, []

    def _history(self) -> list[dict[str, str]]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.messages

    def turn(self, user_text: str, sampling: SamplingParams, stats: Stats,
             output_format: OutputFormat | None = None) -> Iterator[Chunk]:
        from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache

        self.messages.append({"role": "user", "content": user_text})
        tokens = render_prompt(self.loaded, self._history(), self.use_template)
        if self._cache is None:
            self._cache, self._cache_tokens = make_prompt_cache(self.loaded.model), []
        common = 0
        for a, b in zip(self._cache_tokens, tokens):
            if a != b:
                break
            common += 1
        common = min(common, len(tokens) - 1)
        surplus = len(self._cache_tokens) - common
        if surplus > 0:
            if can_trim_prompt_cache(self._cache):
                trim_prompt_cache(self._cache, surplus)
            else:
                self._cache, common = make_prompt_cache(self.loaded.model), 0
        reply: list[str] = []
        try:
            for chunk in generate(self.loaded, tokens, sampling, stats, self._cache, common, output_format):
                reply.append(chunk.text)
                yield chunk
        finally:
            # What the cache holds now: the prompt plus what was generated (the decode loop may
            # have run one token ahead); trim it back to a known token list.
            self._cache_tokens = tokens + stats.tokens
            held = self._cache[0].offset if self._cache and hasattr(self._cache[0], "offset") else None
            if held is not None and held > len(self._cache_tokens) and can_trim_prompt_cache(self._cache):
                trim_prompt_cache(self._cache, held - len(self._cache_tokens))
            elif held is not None and held < len(self._cache_tokens):
                self._cache_tokens = self._cache_tokens[:held]
            self.messages.append({"role": "assistant", "content": "".join(reply)})
