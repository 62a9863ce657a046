"""One sequence at a time, for KV caches mlx-lm's batch cannot hold (quantized KV).

mlx-lm's ``BatchKVCache`` has no quantized form (0.32: ``QuantizedKVCache`` cannot be
merged or extracted), so a server started with ``--kv-bits`` runs its requests one after
the other through mlx-lm's ``generate_step``, which quantizes the cache once it passes
``quantized_kv_start`` tokens. This class speaks the part of ``BatchGenerator``'s interface
the engine uses (insert_segments / next / remove / extract_cache / stats / close and the
prefill attributes), so the engine loop is the same in both modes. The prompt is
prefilled in paced chunks here (not inside generate_step) so interrupts and cancels are
seen between chunks; /health and the log say that requests run one at a time.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Any


KV_BITS = (2, 3, 4, 5, 6, 8)  # what mx.quantize supports
KV_GROUP_SIZES = (32, 64, 128)


@dataclass(frozen=True)
class KVQuant:
    """``--kv-bits`` and friends (mlx-lm's kv_bits / kv_group_size / quantized_kv_start)."""

    bits: int
    group_size: int = 64
    quantized_start: int = 0

    def describe(self) -> dict:
        return {"bits": self.bits, "group_size": self.group_size, "quantized_start": self.quantized_start,
                "batching": "one request at a time (mlx-lm's batch KV cache has no quantized form)"}


@dataclass
class _Pending:
    uid: int
    tokens: list[int]
    max_tokens: int
    cache: Any
    sampler: Any
    processors: list
    stops: Any
    done_prefill: int = 0
    generator: Any = None
    matcher: Any = None
    produced: int = 0


@dataclass
class _PromptResponse:
    uid: int
    progress: tuple
    end_of_segment: bool
    end_of_prompt: bool


@dataclass
class _GenResponse:
    uid: int
    token: int
    logprobs: Any
    finish_reason: str | None
    prompt_cache: Any = None  # quantized caches are not kept by the prefix cache
    all_tokens: Any = None


@dataclass
class _Stats:
    prompt_tokens: int = 0
    prompt_time: float = 0.0


def head_dim(model) -> int | None:
    args = getattr(model, "args", None)
    hd = getattr(args, "head_dim", None)
    if not hd and getattr(args, "hidden_size", None) and getattr(args, "num_attention_heads", None):
        hd = args.hidden_size // args.num_attention_heads
    return hd or None


class SoloGenerator:
    def __init__(self, model, quant: KVQuant, *, prefill_step_size: int = 512, prefill_batch_size: int = 1):
        hd = head_dim(model)
        if hd and hd % quant.group_size:  # else the first quantization fails inside a request
            raise ValueError(f"--kv-group-size {quant.group_size} does not divide this model's attention head "
                             f"size ({hd}); use a group size that does {KV_GROUP_SIZES}")
        self.model = model
        self.kv_bits, self.kv_group_size, self.quantized_kv_start = quant.bits, quant.group_size, quant.quantized_start
        self.prefill_step_size = prefill_step_size
        self.prefill_batch_size = prefill_batch_size
        self.completion_batch_size = 1  # read and set by the pacer's decode-only ticks; one runs at a time anyway
        self._queue: deque[_Pending] = deque()
        self._uid = 0
        self._stats = _Stats()

    def insert_segments(self, segments, max_tokens, caches=None, all_tokens=None, samplers=None,
                        logits_processors=None, stop_sequences=None):
        from mlx_lm.models.cache import make_prompt_cache

        uids = []
        for i, segs in enumerate(segments):
            tokens = [t for s in segs for t in s]
            if not tokens:
                raise ValueError("empty prompt")
            cache = (caches[i] if caches else None) or make_prompt_cache(self.model)
            done = len(all_tokens[i]) if all_tokens else 0
            self._queue.append(_Pending(self._uid, (all_tokens[i] if all_tokens else []) + tokens, max_tokens[i],
                                        cache, samplers[i], list(logits_processors[i] or []), stop_sequences[i],
                                        done_prefill=done))
            uids.append(self._uid)
            self._uid += 1
        return uids

    @contextlib.contextmanager
    def stats(self):
        before = (self._stats.prompt_tokens, self._stats.prompt_time)
        out = _Stats()
        try:
            yield out
        finally:
            out.prompt_tokens = self._stats.prompt_tokens - before[0]
            out.prompt_time = self._stats.prompt_time - before[1]

    def next(self):
        import mlx.core as mx
        from mlx_lm.generate import generate_step, maybe_quantize_kv_cache

        if not self._queue:
            return [], []
        seq = self._queue[0]
        if seq.generator is None:
            remaining = len(seq.tokens) - 1 - seq.done_prefill
            if remaining > 0:  # one paced chunk of the prompt per call
                n = min(self.prefill_step_size, remaining)
                chunk = mx.array(seq.tokens[seq.done_prefill:seq.done_prefill + n])
                t0 = time.perf_counter()
                self.model(chunk[None], cache=seq.cache)
                maybe_quantize_kv_cache(seq.cache, self.quantized_kv_start, self.kv_group_size, self.kv_bits)
                mx.eval([c.state for c in seq.cache])
                self._stats.prompt_time += time.perf_counter() - t0
                self._stats.prompt_tokens += n
                seq.done_prefill += n
                return [_PromptResponse(seq.uid, (seq.done_prefill, len(seq.tokens)), False, False)], []
            # generate_step sees only the tokens from here on: the processors (repetition
            # penalty) get the prefilled prompt in front, as in the batch engine.
            prefix = mx.array(seq.tokens[:seq.done_prefill])
            processors = [(lambda p: (lambda toks, logits: p(mx.concatenate([prefix, toks]), logits)))(p)
                          for p in seq.processors]
            seq.generator = generate_step(mx.array(seq.tokens[seq.done_prefill:]), self.model,
                                          max_tokens=seq.max_tokens, sampler=seq.sampler,
                                          logits_processors=processors or None, prompt_cache=seq.cache,
                                          kv_bits=self.kv_bits, kv_group_size=self.kv_group_size,
                                          quantized_kv_start=self.quantized_kv_start)
            seq.matcher = seq.stops.matcher()
        token, logprobs = next(seq.generator)
        token = int(token)
        seq.produced += 1
        reason = "stop" if seq.matcher.advance(token) else ("length" if seq.produced >= seq.max_tokens else None)
        if reason is not None:
            self._queue.popleft()
        return [], [_GenResponse(seq.uid, token, logprobs, reason)]

    def remove(self, uids, return_prompt_caches=False):
        gone = set(uids)
        self._queue = deque(s for s in self._queue if s.uid not in gone)
        return {}

    def extract_cache(self, uids):
        return {}  # never snapshotted (see prompt_cache above)

    def close(self):
        self._queue.clear()
