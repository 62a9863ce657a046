"""Single-stream generation: sampling settings, stop handling, chat sessions with KV reuse.

Built on mlx-lm's ``stream_generate`` (which owns the decode loop, the sampler and the
prompt cache); this module adds what a CLI user expects on top: end-of-turn tokens that
never show, stop strings that cut cleanly across chunk boundaries, and a chat session
that keeps its KV cache between turns so a turn only prefills its new tokens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from mlxk.engine.loader import Loaded, eos_token_ids


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @classmethod
    def with_defaults(cls, generation_config: dict[str, Any], **given: Any) -> "Sampling":
        """CLI values win; the model's generation_config.json fills what the user left out."""
        values: dict[str, Any] = {}
        for key in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty"):
            if given.get(key) is not None:
                values[key] = given[key]
            elif generation_config.get(key) is not None and generation_config.get("do_sample", True):
                values[key] = generation_config[key]
        for key in ("max_tokens", "seed"):
            if given.get(key) is not None:
                values[key] = given[key]
        if given.get("stop"):
            values["stop"] = tuple(given["stop"])
        return cls(**values)


@dataclass
class Chunk:
    text: str
    token: int | None = None


@dataclass
class Stats:
    prompt_tokens: int = 0
    prefilled_tokens: int = 0  # prompt tokens actually run through the model (the rest came from the KV cache)
    generated_tokens: int = 0
    prompt_tps: float = 0.0
    generation_tps: float = 0.0
    peak_memory_gb: float = 0.0
    seconds: float = 0.0
    finish_reason: str = "length"


def _sampler(s: Sampling):
    from mlx_lm.sample_utils import make_logits_processors, make_sampler

    sampler = make_sampler(temp=s.temperature, top_p=s.top_p, min_p=s.min_p, top_k=s.top_k)
    processors = make_logits_processors(repetition_penalty=s.repetition_penalty) if s.repetition_penalty else None
    return sampler, processors


class StopScanner:
    """Holds back text that could be the start of a stop string; cuts at the first match."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if not self.stops:
            return text, False
        self.pending += text
        hits = [(self.pending.find(s), s) for s in self.stops if s in self.pending]
        if hits:
            idx = min(i for i, _ in hits)
            out, self.pending = self.pending[:idx], ""
            return out, True
        keep = max((len(s) - 1 for s in self.stops), default=0)
        # keep only a tail that is a prefix of some stop string
        for n in range(min(keep, len(self.pending)), 0, -1):
            tail = self.pending[-n:]
            if any(s.startswith(tail) for s in self.stops):
                out, self.pending = self.pending[:-n], tail
                return out, False
        out, self.pending = self.pending, ""
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


def generate(
    loaded: Loaded,
    prompt_tokens: list[int],
    sampling: Sampling,
    stats: Stats,
    prompt_cache: list | None = None,
    cached_prefix: int = 0,
) -> Iterator[Chunk]:
    """Stream text for ``prompt_tokens``; ``prompt_cache`` already holds the first ``cached_prefix`` of them."""
    import mlx.core as mx
    from mlx_lm import stream_generate

    if sampling.seed is not None:
        mx.random.seed(sampling.seed)
    sampler, processors = _sampler(sampling)
    eos = eos_token_ids(loaded.tokenizer, loaded.generation_config)
    scanner = StopScanner(sampling.stop)
    todo = prompt_tokens[cached_prefix:] or prompt_tokens[-1:]
    stats.prompt_tokens = len(prompt_tokens)
    stats.prefilled_tokens = len(todo)
    stats.finish_reason = "length"
    start = time.perf_counter()
    kwargs: dict[str, Any] = {"max_tokens": sampling.max_tokens, "sampler": sampler}
    if processors:
        kwargs["logits_processors"] = processors
    if prompt_cache is not None:
        kwargs["prompt_cache"] = prompt_cache
    last = None
    for resp in stream_generate(loaded.model, loaded.tokenizer, mx.array(todo), **kwargs):
        last = resp
        if resp.token in eos:
            stats.finish_reason = "stop"
            break
        stats.generated_tokens += 1
        text, stopped = scanner.feed(resp.text)
        if text:
            yield Chunk(text, resp.token)
        if stopped:
            stats.finish_reason = "stop"
            break
    else:
        rest = scanner.flush()
        if rest:
            yield Chunk(rest)
    stats.seconds = time.perf_counter() - start
    if last is not None:
        stats.prompt_tps = last.prompt_tps
        stats.generation_tps = last.generation_tps
        stats.peak_memory_gb = last.peak_memory
        if last.finish_reason == "stop" and stats.finish_reason != "stop":
            stats.finish_reason = "stop"


def render_prompt(loaded: Loaded, messages: list[dict[str, str]], use_template: bool = True) -> list[int]:
    tok = loaded.tokenizer
    if use_template and getattr(tok, "chat_template", None):
        ids = tok.apply_chat_template(messages, add_generation_prompt=True)
        return list(ids) if not isinstance(ids, str) else tok.encode(ids)
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

    def turn(self, user_text: str, sampling: Sampling, stats: Stats) -> Iterator[Chunk]:
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
        generated: list[int] = []
        try:
            for chunk in generate(self.loaded, tokens, sampling, stats, self._cache, common):
                reply.append(chunk.text)
                if chunk.token is not None:
                    generated.append(chunk.token)
                yield chunk
        finally:
            # What the cache holds now: the prompt plus what was generated (the decode loop may
            # have run one token ahead); trim it back to a known token list.
            self._cache_tokens = tokens + generated
            held = self._cache[0].offset if self._cache and hasattr(self._cache[0], "offset") else None
            if held is not None and held > len(self._cache_tokens) and can_trim_prompt_cache(self._cache):
                trim_prompt_cache(self._cache, held - len(self._cache_tokens))
            elif held is not None and held < len(self._cache_tokens):
                self._cache_tokens = self._cache_tokens[:held]
            self.messages.append({"role": "assistant", "content": "".join(reply)})
