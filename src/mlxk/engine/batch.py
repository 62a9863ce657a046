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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mlxk.engine.bridge import RequestHandle, posts_per_step
from mlxk.engine.metrics import Metrics
from mlxk.engine.requests import (CANCELLED, EngineError, Event, GenerationRequest, ModelTarget, TokenLogprob,
                                  Usage)
from mlxk.engine.sampling import make_sampler
from mlxk.inspection.context import context_length

log = logging.getLogger("mlxk.engine")


@dataclass
class _Seq:
    handle: RequestHandle
    uid: int
    detok: Any
    stops: list[str]
    usage: Usage
    logprobs: bool
    top_logprobs: int
    prompt: list[int]
    buf: str = ""
    lp_buf: list = field(default_factory=list)
    first_token_at: float | None = None
    done: bool = False


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type", "text") == "text")
    return str(content)


class Engine:
    """Owns the model, the BatchGenerator and the prefix cache, on one thread."""

    def __init__(self, default: ModelTarget | None, *, max_tokens: int = 512, max_concurrency: int = 32,
                 max_queue: int = 256, prefix_cache=None, idle_unload: float | None = None,
                 load_fn: Callable[[Path], tuple[Any, Any]] | None = None):
        self.default = default
        self.max_tokens = max_tokens
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.prefix_cache = prefix_cache
        self.idle_unload = idle_unload
        self._load_fn = load_fn
        self.metrics = Metrics()
        self.state = "loading" if default else "idle"
        self.load_error: str | None = None
        self.current: ModelTarget | None = None
        self.context_length: int | None = None
        self._inbox: queue.Queue[RequestHandle] = queue.Queue()
        self._waiting: list[RequestHandle] = []
        self._seqs: dict[int, _Seq] = {}
        self._loading: list = []  # (handle, prompt, bounds, PendingLoad) waiting for a disk read
        self._stop = threading.Event()
        self._interrupt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlxk-engine", daemon=True)
        self._model = self._tokenizer = self._bg = None
        self._last_active = time.monotonic()

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
        import mlx.core as mx

        self.state = "loading"
        self._unload()
        try:
            eos = None
            if self._load_fn is not None:
                model, tokenizer = self._load_fn(target.path)
            else:
                try:  # the run engine's loader (fast BLAS, generation_config EOS ids)
                    from mlxk.engine.loader import eos_token_ids
                    from mlxk.engine.loader import load as mlxk_load
                except ImportError:
                    mlxk_load = None
                if mlxk_load is not None:
                    loaded = mlxk_load(Path(target.path))
                    model, tokenizer = loaded.model, loaded.tokenizer
                    eos = eos_token_ids(tokenizer, loaded.generation_config)
                else:
                    from mlx_lm.utils import load

                    model, tokenizer = load(str(target.path))
        except Exception as exc:  # reported on /health and to the request
            self.state = "failed"
            detail = str(exc)
            for p in sorted({str(target.path), target.key, str(Path(target.path).expanduser())}, key=len, reverse=True):
                detail = detail.replace(p, target.name)  # never an absolute path in an answer
            self.load_error = f"{type(exc).__name__}: {detail}"
            log.error("loading %s failed: %s", target.name, self.load_error)
            raise EngineError(500, f"Model '{target.name}' failed to load: {self.load_error}", "server_error") from exc
        from mlx_lm.generate import BatchGenerator

        from mlx_lm.generate import StopSequences

        self._model, self._tokenizer, self.current = model, tokenizer, target
        eos = eos if eos else set(getattr(tokenizer, "eos_token_ids", None) or [])
        self._stop_sequences = StopSequences([(int(t),) for t in sorted(eos)])
        args = getattr(model, "args", None)
        self.context_length = context_length(target.path, args)
        self._bg = BatchGenerator(model, max_tokens=self.max_tokens, completion_batch_size=self.max_concurrency,
                                  prefill_batch_size=min(8, self.max_concurrency), prefill_step_size=512,
                                  stream=mx.default_stream(mx.default_device()))
        self.state, self.load_error = "ready", None
        self._last_active = time.monotonic()
        log.info("model %s loaded (context %s)", target.name, self.context_length)

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
                    except Exception:  # fail what was running, keep serving
                        log.exception("engine step failed")
                        self._fail_all(EngineError(500, "Internal engine error", "server_error"))
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
        elif self.idle_unload and self._bg is not None and not self._waiting and not self._loading \
                and self._inbox.empty() and time.monotonic() - self._last_active > self.idle_unload:
            log.info("idle for %ss: unloading %s", self.idle_unload, self.current.name if self.current else "")
            self._unload()
            self.state = "idle"

    def _fail_all(self, err: EngineError) -> None:
        self.metrics.requests_failed += len(self._seqs) + len(self._loading)
        for s in list(self._seqs.values()):
            s.handle.post(Event("error", error=err))
        for x in self._loading:
            x[0].post(Event("error", error=err))
        if self._seqs and self._bg is not None:
            try:
                self._bg.remove(list(self._seqs))
            except Exception:
                self._bg = None  # rebuilt by the next load
                self.current = None
        self._seqs.clear()
        self._loading.clear()

    def _interrupt_everything(self) -> None:
        for s in list(self._seqs.values()):
            self._flush_text(s, final=True)
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
                self._insert(h)
            except EngineError as err:
                self.metrics.requests_failed += 1
                h.post(Event("error", error=err))
            except Exception as exc:
                log.exception("request failed")
                self.metrics.requests_failed += 1
                h.post(Event("error", error=EngineError(500, f"{type(exc).__name__}: {exc}", "server_error")))

    def _tokenize(self, req: GenerationRequest) -> tuple[list[int], list[int]]:
        """Prompt tokens and snapshot boundaries (end of the system prompt, of the conversation)."""
        tok = self._tokenizer
        if req.messages is not None:
            messages = []
            for m in req.messages:
                msg = dict(m)
                msg["content"] = _text_of(m.get("content"))
                messages.append(msg)
            if getattr(tok, "has_chat_template", False) or getattr(tok, "chat_template", None):
                kwargs = {"tools": req.tools} if req.tools else {}

                def render(msgs, gen):
                    out = tok.apply_chat_template(msgs, add_generation_prompt=gen, tokenize=True, **kwargs)
                    if isinstance(out, dict) or hasattr(out, "input_ids"):
                        out = out["input_ids"]
                    return list(out)

                prompt = render(messages, True)
                bounds = []
                if self.prefix_cache is not None:
                    n_sys = next((i for i, m in enumerate(messages) if m["role"] != "system"), len(messages))
                    probes = [messages]
                    if 0 < n_sys < len(messages):
                        probes.insert(0, messages[:n_sys] + [{"role": "user", "content": ""}])
                    for probe in probes:
                        try:
                            bounds.append(_common_prefix(render(probe, False), prompt))
                        except Exception:  # templates that reject a probe: no boundary there
                            pass
                return prompt, bounds
            from mlx_lm.server import convert_chat

            return list(tok.encode(convert_chat(messages))), []
        if isinstance(req.prompt, list):
            return [int(t) for t in req.prompt], []
        return list(tok.encode(req.prompt or "")), []

    def _insert(self, h: RequestHandle) -> None:
        req = h.request
        prompt, bounds = self._tokenize(req)
        if not prompt:
            raise EngineError(400, "The prompt is empty", param=req.prompt_field)
        vocab = getattr(getattr(self._model, "args", None), "vocab_size", None)
        if vocab and any(t < 0 or t >= vocab for t in prompt):
            raise EngineError(400, f"Prompt token ids must be in [0, {vocab})", param=req.prompt_field)
        for name in ("top_k", "top_logprobs"):  # past the vocabulary, sampling would fail the batch step
            if vocab and getattr(req.params, name) > vocab:
                raise EngineError(400, f"'{name}' must be at most the vocabulary size ({vocab})", param=name)
        if vocab and req.params.top_k == vocab:  # every token: mlx-lm's top-k filter wants k < vocabulary
            req.params = req.params.model_copy(update={"top_k": 0})
        ctx = self.context_length
        if ctx and len(prompt) >= ctx:
            raise EngineError(400, f"This model's maximum context length is {ctx} tokens, but the prompt has "
                                   f"{len(prompt)} tokens", param=req.prompt_field, code="context_length_exceeded")
        if self.prefix_cache is None:
            return self._launch(h, prompt, bounds, None, 0)
        self._launch_or_wait(h, prompt, bounds, self.prefix_cache.fetch(self.current.key, prompt))

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
            except Exception as exc:
                log.exception("request failed")
                h.post(Event("error", error=EngineError(500, f"{type(exc).__name__}: {exc}", "server_error")))

    def _launch(self, h: RequestHandle, prompt: list[int], bounds: list[int], cache, cached: int) -> None:
        p = h.request.params
        ctx = self.context_length
        max_tokens = p.max_tokens or self.max_tokens
        if ctx:
            max_tokens = max(1, min(max_tokens, ctx - len(prompt)))
        sampler = make_sampler(p)
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
            all_tokens=[prompt[:cached]], samplers=[sampler], logits_processors=[[]],
            stop_sequences=[self._stop_sequences],
        )
        usage = Usage(prompt_tokens=len(prompt), cached_tokens=cached)
        self._seqs[uid] = _Seq(h, uid, self._tokenizer.detokenizer, [s for s in p.stop if s], usage,
                               p.logprobs, p.top_logprobs, prompt)
        self.metrics.requests += 1
        self.metrics.prompt_tokens += len(prompt)
        h.post(Event("start", usage=usage, model=self._name()))

    def _drop_cancelled(self) -> None:
        gone = [uid for uid, s in self._seqs.items() if s.handle.cancelled]
        if gone:
            self._bg.remove(gone)
            for uid in gone:
                self._seqs.pop(uid).handle.post(Event("error", error=CANCELLED))

    def _step(self) -> None:
        prompt_resps, gen_resps = self._bg.next()
        if self.prefix_cache is not None:
            ends = [r.uid for r in prompt_resps if r.end_of_segment and not r.end_of_prompt and r.uid in self._seqs]
            if ends:
                for uid, (cache, toks) in self._bg.extract_cache(ends).items():
                    self.prefix_cache.store(self.current.key, list(toks), cache, kind="user")
        if gen_resps:
            self.metrics.batch_steps += 1
            self.metrics.batch_size_sum += len(gen_resps)
        finished: list[int] = []
        for r in gen_resps:
            s = self._seqs.get(r.uid)
            if s is None or s.done:
                continue
            if s.first_token_at is None:
                s.first_token_at = time.monotonic()
                self.metrics.observe_ttft(s.first_token_at - s.handle.submitted)
            s.usage.completion_tokens += 1
            self.metrics.completion_tokens += 1
            if r.finish_reason != "stop":
                s.detok.add_token(r.token)
            if r.finish_reason is not None:
                s.detok.finalize()
            s.buf += s.detok.last_segment
            if s.logprobs:
                s.lp_buf.append(self._logprob(r.token, r.logprobs, s.top_logprobs))
            reason = r.finish_reason
            if s.stops:
                hit = min((i for i in (s.buf.find(w) for w in s.stops) if i >= 0), default=-1)
                if hit >= 0:
                    s.buf = s.buf[:hit]
                    reason = "stop"
                    if r.finish_reason is None:
                        finished.append(r.uid)
            if reason is not None:
                self._flush_text(s, final=True)
                s.done = True
                s.handle.post(Event("finish", finish_reason=reason, usage=s.usage, model=self._name()))
                if r.finish_reason is not None and self.prefix_cache is not None and r.prompt_cache is not None:
                    self.prefix_cache.store(self.current.key, list(r.all_tokens), r.prompt_cache)
                self._seqs.pop(r.uid, None)
            else:
                self._flush_text(s, final=False)
        if finished:
            self._bg.remove(finished)

    def _flush_text(self, s: _Seq, final: bool) -> None:
        keep = 0 if final else max((len(w) for w in s.stops), default=1) - 1
        cut = len(s.buf) - keep
        if cut <= 0 and not (final and s.lp_buf):
            return
        text, s.buf = s.buf[:max(cut, 0)], s.buf[max(cut, 0):]
        lps, s.lp_buf = (s.lp_buf or None), []
        if text or lps:
            s.handle.post(Event("delta", text=text, logprobs=lps))

    def _logprob(self, token: int, logprobs, top_n: int) -> TokenLogprob:
        import mlx.core as mx

        tok = self._tokenizer
        top: list[tuple[str, float]] = []
        if top_n > 0:
            idx = mx.argpartition(-logprobs, kth=top_n - 1)[:top_n]
            vals = logprobs[idx].tolist()
            ids = idx.tolist()
            pairs = sorted(zip(ids, vals), key=lambda x: -x[1])
            top = [(tok.decode([i]), v) for i, v in pairs]
        return TokenLogprob(tok.decode([token]), logprobs[token].item(), top)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
