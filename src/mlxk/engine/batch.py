"""The batch engine: one thread owns the model and steps every sequence together.

Wire formats never reach this module. An adapter builds a :class:`GenerationRequest`
(engine/requests.py), calls :meth:`Engine.submit` from the asyncio loop and reads
:class:`Event` objects from the returned :class:`RequestHandle` (engine/bridge.py):

* ``start``  (prompt_tokens, cached_tokens) once the prompt is accepted,
* ``delta``  (text, tokens, logprobs) as text becomes safe to show,
* ``finish`` (finish_reason, usage) at the end,
* ``error``  (EngineError with an HTTP status) instead of ``start`` or at any time,
* ``interrupt`` when the server ends the stream early (shutdown).

The engine thread does all tokenizer and model work, so the event loop never blocks on
it and the tokenizer is never used concurrently. Sequences join and leave mlx-lm's
``BatchGenerator`` between steps (continuous batching).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable

from mlxk.engine import heap, tool_prompt  # tool_prompt (issue 14): tools in the template or the fallback format
from mlxk.engine.bridge import RequestHandle, posts_per_step
from mlxk.engine.constraints import constrain
from mlxk.engine.loading import FailedLoads, describe_failure, load_model
from mlxk.engine.metrics import Metrics
from mlxk.engine.output_parsing import parser_for  # issue 14: tool calls and reasoning out of the text
from mlxk.engine.pacing import PrefillPacer
from mlxk.engine.prompting import disk_bounds, tokenize_request
from mlxk.engine.requests import CANCELLED, EngineError, Event, ModelTarget, Usage
from mlxk.engine.sampling import (OutOfVocabulary, fit_to_vocabulary, guard_sampler, make_logits_processors,
                                  make_sampler)
from mlxk.engine.sequence import Sequence
from mlxk.engine.stops import StopMatcher
from mlxk.inspection.context import context_length

log = logging.getLogger("mlxk.engine")


class Engine:
    """Owns the model, the BatchGenerator and the prefix cache, on one thread."""

    def __init__(self, default: ModelTarget | None, *, max_tokens: int = 512, max_concurrency: int = 32,
                 max_queue: int = 256, prefix_cache=None, idle_unload: float | None = None,
                 load_fn: Callable[[Path], tuple[Any, Any]] | None = None, kv_quant=None,
                 trust_remote_code: bool = False, context_length_override: int | None = None):
        self.default = default
        self.max_tokens = max_tokens
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.prefix_cache = prefix_cache
        self.idle_unload = idle_unload
        self._load_fn = load_fn
        self.trust_remote_code = trust_remote_code  # the operator's opt-in (--trust-remote-code)
        self.context_length_override = context_length_override  # serve --context-length
        self.kv_quant = kv_quant  # solo.KVQuant: quantized KV caches, one request at a time
        if kv_quant is not None:
            log.info("KV cache quantized to %d bits (group %d, from token %d): requests run one at a time, "
                     "mlx-lm's batch KV cache has no quantized form", kv_quant.bits, kv_quant.group_size,
                     kv_quant.quantized_start)
        self.metrics = Metrics()
        self.state = "loading" if default else "idle"
        self.load_error: str | None = None
        self.current: ModelTarget | None = None
        self.context_length: int | None = None
        self._inbox: queue.Queue[RequestHandle] = queue.Queue()
        self._waiting: list[RequestHandle] = []
        self._seqs: dict[int, Sequence] = {}
        self._loading: list = []  # (handle, prompt, bounds, PendingLoad) waiting for a disk read
        self._stop = threading.Event()
        self._interrupt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlxk-engine", daemon=True)
        self._model = self._tokenizer = self._bg = None
        self.vocab_size: int | None = None
        self._failed_loads = FailedLoads()
        self._sampler_failures: dict[int, Exception] = {}
        self._pacer = PrefillPacer()
        self._last_active = time.monotonic()
        self._trimmed = True  # freed heap memory already given back since the last step

    # --- loop side ---------------------------------------------------------------

    @property
    def active_sequences(self) -> int:
        return len(self._seqs)

    @property
    def queued(self) -> int:
        return self._inbox.qsize() + len(self._waiting)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def submit(self, handle: RequestHandle) -> None:
        if self._interrupt.is_set() or self._stop.is_set():
            raise EngineError(503, "Server is shutting down", "server_error", code="shutting_down")
        if self._thread.ident is not None and not self._thread.is_alive():
            raise EngineError(503, "The engine is not running", "server_error", code="engine_down")
        if self.queued >= self.max_queue:
            raise EngineError(503, "Too many queued requests, retry later", "server_error", code="queue_full")
        self._inbox.put(handle)

    def interrupt_all(self) -> None:
        """Shutdown, first phase: every running and queued stream gets an interrupt event."""
        self._interrupt.set()

    def stop(self, timeout: float = 3.0) -> None:
        self._interrupt.set()
        self._stop.set()
        self._inbox.put(None)  # type: ignore[arg-type]
        if self._thread.is_alive():
            self._thread.join(timeout)

    # --- engine thread -------------------------------------------------------------

    def _load(self, target: ModelTarget) -> None:
        """Load ``target``; if that fails, bring back the model that was serving and raise."""
        known = self._failed_loads.known(target)
        if known is not None:
            raise known
        previous = self.current
        self.state = "loading"
        self._unload()
        try:
            self._install(target)
            self._failed_loads.forget(target)
            return
        except Exception as exc:  # reported on /health and to the request
            message = describe_failure(target, exc)
            err = self._failed_loads.remember(target, message)
        if previous is not None and previous.key != target.key:
            try:
                self._install(previous)
                log.info("kept serving %s after the failed load", previous.name)
                raise err
            except EngineError:
                raise
            except Exception as exc:
                message = describe_failure(previous, exc)
                self._failed_loads.remember(previous, message)
        self.state, self.load_error = "failed", message
        raise err

    def _install(self, target: ModelTarget) -> None:
        from mlx_lm.generate import StopSequences

        loaded = load_model(target, self._load_fn, self.trust_remote_code)
        self._model, self._tokenizer, self.current = loaded.model, loaded.tokenizer, target
        self._stop_sequences = StopSequences([(int(t),) for t in sorted(loaded.eos_ids)])
        self.context_length = self.context_length_override or context_length(target.path, getattr(loaded.model, "args", None))
        self.vocab_size = getattr(getattr(loaded.model, "args", None), "vocab_size", None)
        self._bg = self._new_batch_generator()
        self.state, self.load_error = "ready", None
        self._last_active = time.monotonic()
        log.info("model %s loaded (context %s)", target.name, self.context_length)

    def _new_batch_generator(self):
        import mlx.core as mx
        from mlx_lm.generate import BatchGenerator

        if self.kv_quant is not None:
            from mlxk.engine.solo import SoloGenerator

            return SoloGenerator(self._model, self.kv_quant)

        return BatchGenerator(self._model, max_tokens=self.max_tokens, completion_batch_size=self.max_concurrency,
                              prefill_batch_size=min(8, self.max_concurrency), prefill_step_size=512,
                              stream=mx.default_stream(mx.default_device()))

    def memory(self) -> dict[str, int]:
        """Bytes held: MLX arrays in use, MLX's buffer cache (freed, kept for reuse), the RAM prefix cache."""
        import mlx.core as mx

        pc = self.prefix_cache
        return {"mlx_active": mx.get_active_memory(), "mlx_cache": mx.get_cache_memory(),
                "prefix_cache_ram": pc.ram.nbytes if pc is not None else 0}

    @property
    def load_errors(self) -> dict[str, str]:
        """Models whose last load failed, with the reason (for /health)."""
        return self._failed_loads.report()

    def _unload(self) -> None:
        if self._bg is None and self._model is None:
            return
        import gc

        import mlx.core as mx

        if self._bg is not None:
            self._bg.close()
        if self.prefix_cache is not None:
            self.prefix_cache.flush()
            self.prefix_cache.drop_ram()  # disk snapshots stay; RAM goes with the model
        self._bg = self._model = self._tokenizer = None
        self.current = None
        gc.collect()
        mx.clear_cache()

    def _run(self) -> None:
        import mlx.core as mx

        with mx.stream(mx.default_stream(mx.default_device())):
            try:
                if self.default is not None:
                    try:
                        self._load(self.default)
                    except EngineError:
                        pass
                while not self._stop.is_set():
                    try:
                        self._tick()
                    except Exception as exc:  # fail what was running, keep serving
                        log.exception("engine step failed")
                        self._recover(exc)
            finally:
                self._interrupt_everything()
                if self.prefix_cache is not None:
                    self.prefix_cache.close()

    def _tick(self) -> None:
        if self._interrupt.is_set():
            self._interrupt_everything()
            self._stop.wait(0.05)
            return
        self._admit()
        if self._loading:
            self._finish_loads()
        self._drop_cancelled()
        if self._seqs:
            with posts_per_step():
                self._step()
            self._last_active = time.monotonic()
            self._trimmed = False
        elif not self._trimmed and not self._waiting and not self._loading and self._inbox.empty():
            heap.release_free_memory()  # once per busy spell (engine/heap.py)
            self._trimmed = True
        elif self.idle_unload and self._bg is not None and not self._waiting and not self._loading \
                and self._inbox.empty() and time.monotonic() - self._last_active > self.idle_unload:
            log.info("idle for %ss: unloading %s", self.idle_unload, self.current.name if self.current else "")
            self._unload()
            self.state = "idle"

    def _recover(self, exc: Exception) -> None:
        """After a step that failed for no one sequence: end those in flight, start a clean batch.

        The BatchGenerator may be half-way through a step (KV offsets moved, a poisoned
        sampler still in its lists), so it is dropped whole; the model stays loaded and the
        next request runs on a fresh one.
        """
        err = EngineError(500, f"The engine step failed ({type(exc).__name__}); the request was ended",
                          "server_error", code="engine_error")
        self.metrics.requests_failed += len(self._seqs) + len(self._loading)
        for s in list(self._seqs.values()):
            s.handle.post(Event("error", error=err))
        for x in self._loading:
            x[0].post(Event("error", error=err))
        self._seqs.clear()
        self._loading.clear()
        self._sampler_failures.clear()
        if self._model is None:
            return
        try:
            self._bg.close()
        except Exception:  # a broken generator may fail to close too; it is dropped either way
            pass
        try:
            self._bg = self._new_batch_generator()
        except Exception as again:  # nothing usable left: load afresh on the next request
            log.error("rebuilding the batch failed: %s", again)
            self._unload()
            self.state = "idle"

    def _interrupt_everything(self) -> None:
        for s in list(self._seqs.values()):
            s.flush(final=True)
            s.handle.post(Event("interrupt", usage=s.usage, model=self._name()))
        if self._seqs and self._bg is not None:
            self._bg.remove(list(self._seqs))
        self._seqs.clear()
        pending = list(self._waiting) + [x[0] for x in self._loading]
        self._waiting.clear()
        self._loading.clear()
        while True:
            try:
                h = self._inbox.get_nowait()
            except queue.Empty:
                break
            if h is not None:
                pending.append(h)
        for h in pending:
            h.post(Event("error", error=EngineError(503, "Server is shutting down", "server_error", code="shutting_down")))

    def _name(self) -> str:
        return self.current.name if self.current else ""

    def _admit(self) -> None:
        block = not self._seqs and not self._waiting
        try:
            h = self._inbox.get(timeout=0.005 if self._loading else 0.1) if block else self._inbox.get_nowait()
            while True:
                if h is not None:
                    self._waiting.append(h)
                h = self._inbox.get_nowait()
        except queue.Empty:
            pass
        while self._waiting and len(self._seqs) < self.max_concurrency:
            h = self._waiting[0]
            if h.cancelled:
                self._waiting.pop(0)
                h.post(Event("error", error=CANCELLED))
                continue
            target = h.request.target or self.default  # None: the preloaded model
            if target is not None and (self.current is None or target.key != self.current.key):
                known = self._failed_loads.known(target)
                if known is not None:  # a folder that failed to load and has not changed since
                    self._waiting.pop(0)
                    h.post(Event("error", error=known))
                    continue
                if self._seqs or self._loading:  # drain the batch before switching models
                    return
                try:
                    self._load(target)
                except EngineError as err:
                    self._waiting.pop(0)
                    h.post(Event("error", error=err))
                    continue
            elif self._bg is None:
                if self.default is None:
                    self._waiting.pop(0)
                    h.post(Event("error", error=EngineError(400, "No model loaded: name one in 'model'", param="model")))
                    continue
                try:
                    self._load(self.default)
                except EngineError as err:
                    self._waiting.pop(0)
                    h.post(Event("error", error=err))
                    continue
            self._waiting.pop(0)
            try:
                self._count(h) if getattr(h, "count_only", False) else self._insert(h)
            except EngineError as err:
                self.metrics.requests_failed += 1
                h.post(Event("error", error=err))
            except Exception as exc:
                log.exception("request failed")
                self.metrics.requests_failed += 1
                h.post(Event("error", error=EngineError(500, f"{type(exc).__name__}: {exc}", "server_error")))

    def _insert(self, h: RequestHandle) -> None:
        req = h.request
        prompt, bounds = tokenize_request(self._tokenizer, tool_prompt.prepare(self._tokenizer, req),
                                          self.prefix_cache is not None)
        if not prompt:
            raise EngineError(400, "The prompt is empty", param=req.prompt_field)
        vocab = getattr(getattr(self._model, "args", None), "vocab_size", None)
        if vocab and any(t < 0 or t >= vocab for t in prompt):
            raise EngineError(400, f"Prompt token ids must be in [0, {vocab})", param=req.prompt_field)
        try:  # past the vocabulary, sampling would fail the batch step
            req.params = fit_to_vocabulary(req.params, vocab)
        except OutOfVocabulary as exc:
            raise EngineError(400, str(exc), param=exc.field) from None
        ctx = self.context_length
        if ctx and len(prompt) >= ctx:
            raise EngineError(400, f"This model's maximum context length is {ctx} tokens, but the prompt has "
                                   f"{len(prompt)} tokens", param=req.prompt_field, code="context_length_exceeded")
        if self.prefix_cache is None:
            return self._launch(h, prompt, bounds, None, 0)
        self._launch_or_wait(h, prompt, bounds, self.prefix_cache.fetch(self.current.key, prompt))

    def _count(self, h: RequestHandle) -> None:
        """count_tokens endpoints: the prompt's tokens as a generation would have them, nothing run."""
        prompt, _ = tokenize_request(self._tokenizer, tool_prompt.prepare(self._tokenizer, h.request), False)
        h.post(Event("start", usage=Usage(prompt_tokens=len(prompt)), model=self._name()))

    def _launch_or_wait(self, h: RequestHandle, prompt: list[int], bounds: list[int], found) -> None:
        """Start the sequence from a prefix-cache answer, or park it while a snapshot is read."""
        from mlxk.engine.prefix_cache import PendingLoad

        if isinstance(found, PendingLoad):  # read on the I/O thread; decoding goes on meanwhile
            self._loading.append((h, prompt, bounds, found))
        else:
            self._launch(h, prompt, bounds, *found)

    def _finish_loads(self) -> None:
        ready = [x for x in self._loading if x[3].done() or x[0].cancelled]
        if not ready or self.current is None:
            return
        self._loading = [x for x in self._loading if x not in ready]
        for h, prompt, bounds, pending in ready:
            if h.cancelled:
                h.post(Event("error", error=CANCELLED))
                continue
            try:  # a snapshot that fails verification makes this another (shorter) PendingLoad
                self._launch_or_wait(h, prompt, bounds, self.prefix_cache.finish_load(pending, self.current.key, prompt))
            except EngineError as err:  # the request's own fault (a schema, say): its 4xx, as on the RAM path
                self.metrics.requests_failed += 1
                h.post(Event("error", error=err))
            except Exception as exc:
                log.exception("request failed")
                h.post(Event("error", error=EngineError(500, f"{type(exc).__name__}: {exc}", "server_error")))

    def _launch(self, h: RequestHandle, prompt: list[int], bounds: list[int], cache, cached: int) -> None:
        p = h.request.params
        ctx = self.context_length
        max_tokens = p.max_tokens or self.max_tokens
        if ctx:
            max_tokens = max(1, min(max_tokens, ctx - len(prompt)))
        box: list[int] = []
        sampler = guard_sampler(make_sampler(p), box, self._sampler_failures)
        processors = make_logits_processors(p)
        constraint = constrain(h.request, self._tokenizer, self.vocab_size)  # structured output; None: free text
        if constraint is not None:
            sampler, processors = constraint.wrap(sampler, processors)
        if self.prefix_cache is not None:
            if cached:
                self.metrics.cache_hits += 1
            else:
                self.metrics.cache_misses += 1
            segments = self.prefix_cache.segments(prompt, cached, bounds)
        else:
            segments = [prompt]
        (uid,) = self._bg.insert_segments(
            segments=[segments], max_tokens=[max_tokens], caches=[cache] if cache is not None else None,
            all_tokens=[prompt[:cached]], samplers=[sampler], logits_processors=[processors],
            stop_sequences=[self._stop_sequences],
        )
        box.append(uid)
        usage = Usage(prompt_tokens=len(prompt), cached_tokens=cached)
        self._seqs[uid] = Sequence(h, uid, self._tokenizer.detokenizer, StopMatcher(p.stop), usage,
                               p.logprobs, p.top_logprobs, prompt, bounds=disk_bounds(h.request, bounds),
                               constraint=constraint)
        self._seqs[uid].output = parser_for(self._tokenizer, h.request, prompt)  # issue 14
        self.metrics.requests += 1
        self.metrics.prompt_tokens += len(prompt)
        h.post(Event("start", usage=usage, model=self._name()))

    def _drop_cancelled(self) -> None:
        gone = [uid for uid, s in self._seqs.items() if s.handle.cancelled]
        if not gone:
            return
        # A prompt cut off in its prefill keeps what was done in the RAM prefix cache: the
        # client's retry (an agent's timeout, a message sent again) goes on from there.
        keep = self.prefix_cache is not None and any(self._seqs[uid].first_token_at is None for uid in gone)
        caches = self._bg.remove(gone, return_prompt_caches=keep) or {}
        for uid in gone:
            s = self._seqs.pop(uid)
            partial = caches.get(uid) if s.first_token_at is None else None
            if partial is not None:
                cache, toks = partial
                toks = list(toks)
                if len(toks) > s.usage.cached_tokens and toks == s.prompt[:len(toks)]:
                    self.prefix_cache.store(self.current.key, toks, cache, kind="user")
            s.handle.post(Event("error", error=CANCELLED))

    def _step(self) -> None:
        bg = self._bg
        prefilling = sum(1 for s in self._seqs.values() if s.first_token_at is None)
        decoding = len(self._seqs) - prefilling
        chunk = self._pacer.plan(decoding > 0, min(prefilling, bg.prefill_batch_size)) if prefilling else None
        full = bg.completion_batch_size
        if chunk is not None:
            bg.prefill_step_size = chunk
        elif prefilling:  # a decode-only tick (pacing.py): mlx-lm prefills nothing once the batch is "full"
            bg.completion_batch_size = decoding
        started = time.monotonic()
        try:
            with bg.stats() as stats:
                prompt_resps, gen_resps = bg.next()
        finally:
            bg.completion_batch_size = full
        took = time.monotonic() - started
        self._pacer.observe(decoding > 0, stats.prompt_tokens, took)
        log.debug("step: %d decoding, %d prompt tokens, %.0f ms", decoding, stats.prompt_tokens, took * 1000)
        if self.prefix_cache is not None:
            ends = [r.uid for r in prompt_resps if r.end_of_segment and not r.end_of_prompt and r.uid in self._seqs]
            if ends:
                for uid, (cache, toks) in bg.extract_cache(ends).items():
                    # mlx-lm also ends a segment one token before the prompt's end: RAM only
                    to_disk = len(toks) in self._seqs[uid].bounds
                    self.prefix_cache.store(self.current.key, list(toks), cache, kind="user", to_disk=to_disk)
        if gen_resps:
            self.metrics.batch_steps += 1
            self.metrics.batch_size_sum += len(gen_resps)
        failed = dict(self._sampler_failures)  # the guards hold this dict: empty it, never rebind
        self._sampler_failures.clear()
        finished: list[int] = []
        for r in gen_resps:
            s = self._seqs.get(r.uid)
            if s is None or s.done:
                continue
            try:
                if r.uid in failed:
                    raise failed[r.uid]
                if self._advance(s, r) and r.finish_reason is None:
                    finished.append(r.uid)
            except Exception as exc:  # this sequence only; the batch goes on
                log.warning("sequence %d failed: %s: %s", r.uid, type(exc).__name__, exc)
                self.metrics.requests_failed += 1
                s.done = True
                self._seqs.pop(r.uid, None)
                s.handle.post(Event("error", error=EngineError(
                    500, f"Generation failed for this request: {type(exc).__name__}: {exc}", "server_error",
                    code="generation_failed")))
                if r.finish_reason is None:
                    finished.append(r.uid)
        if finished:
            bg.remove(finished)

    def _advance(self, s: Sequence, r) -> bool:
        """Take one generated token of ``s``; True when a stop string or its grammar ended it early."""
        if s.first_token_at is None:
            s.first_token_at = time.monotonic()
            self.metrics.observe_ttft(s.first_token_at - s.handle.submitted)
        s.usage.completion_tokens += 1
        self.metrics.completion_tokens += 1
        reason, stopped_early = s.take(r.token, r.logprobs, r.finish_reason, self._tokenizer)
        if reason is None:
            return False
        s.finish(reason, self._name())
        if r.finish_reason is not None and self.prefix_cache is not None and r.prompt_cache is not None:
            self.prefix_cache.store(self.current.key, list(r.all_tokens), r.prompt_cache)
        self._seqs.pop(r.uid, None)
        return stopped_early
