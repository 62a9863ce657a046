"""Drives the real serving Engine in its own process with faults injected into mlx-lm parts.

Run by tests/test_engine_recovery.py as ``python -m tests.engine_faults SCENARIO MODEL_DIR``;
prints one JSON line: for each request, the kinds of its events and the error code, if any.
The faults go into the model and the tokenizer (mlx-lm's objects, wrapped), never into
mlxk's own code: the engine under test is the one the server runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from pathlib import Path

from mlxk.engine.batch import Engine
from mlxk.engine.bridge import RequestHandle
from mlxk.engine.loading import load_model
from mlxk.engine.requests import GenerationRequest, ModelTarget, SamplingParams


class FaultyModel:
    """The real model; raises once on a decode step while ``armed`` is set."""

    def __init__(self, model):
        self._model = model
        self.armed = threading.Event()

    def __call__(self, inputs, cache=None, **kw):
        if self.armed.is_set() and inputs.shape[1] == 1:
            self.armed.clear()
            raise RuntimeError("injected fault in the forward pass")
        return self._model(inputs, cache=cache, **kw)

    def __getattr__(self, name):
        return getattr(self._model, name)


class ExplodingDetokenizer:
    def __init__(self, inner, after: int):
        self._inner, self._left = inner, after

    def add_token(self, token):
        self._left -= 1
        if self._left < 0:
            raise ValueError("injected fault in the detokenizer")
        self._inner.add_token(token)

    def __getattr__(self, name):
        return getattr(self._inner, name)


class FaultyTokenizer:
    """The real tokenizer; the ``bad``-th detokenizer handed out fails after a few tokens."""

    def __init__(self, tok, bad: int):
        self._tok, self._bad, self._handed = tok, bad, 0

    @property
    def detokenizer(self):
        self._handed += 1
        inner = self._tok.detokenizer
        return ExplodingDetokenizer(inner, 3) if self._handed == self._bad else inner

    def __getattr__(self, name):
        return getattr(self._tok, name)


def request(text: str, max_tokens: int) -> GenerationRequest:
    return GenerationRequest(None, SamplingParams(max_tokens=max_tokens, temperature=0.0),
                             messages=[{"role": "user", "content": text}])


async def collect(handle: RequestHandle, on_delta=None) -> dict:
    kinds, code = [], None
    while True:
        ev = await asyncio.wait_for(handle.next(), 120)
        kinds.append(ev.kind)
        if ev.kind == "delta" and on_delta:
            on_delta()
        if ev.kind in ("finish", "error", "interrupt"):
            code = ev.error.code if ev.error else ev.finish_reason
            return {"kinds": sorted(set(kinds)), "end": ev.kind, "code": code}


async def scenario(name: str, model_dir: Path) -> dict:
    holder: dict = {}

    def load_fn(path: Path):
        if name == "load":  # what an mlx-lm outside the verified range looks like
            from mlxk.engine.compat import check_mlx_lm

            class OldBatchGenerator:  # an older insert_segments: no per-sequence stop_sequences
                def insert_segments(self, segments, max_tokens=None, caches=None):
                    pass

                extract_cache = remove = next = insert_segments

            check_mlx_lm(OldBatchGenerator)
        loaded = load_model(ModelTarget(str(path), path, "demo"))
        holder["model"] = FaultyModel(loaded.model)
        tok = FaultyTokenizer(loaded.tokenizer, bad=2 if name == "sequence" else 0)
        return holder["model"], tok

    engine = Engine(ModelTarget(str(model_dir), model_dir, "demo"), max_tokens=64, prefix_cache=None, load_fn=load_fn)
    engine.start()
    while engine.state == "loading":
        await asyncio.sleep(0.1)
    loop = asyncio.get_running_loop()

    def submit(text: str, max_tokens: int) -> RequestHandle:
        h = RequestHandle(loop, request(text, max_tokens))
        engine.submit(h)
        return h

    try:
        if name == "load":
            failed = await collect(submit("Hi", 4))
            return {"state": engine.state, "error": engine.load_error, "request": failed}
        a, b = submit("Count from one to fifty.", 48), submit("Name many colors.", 48)
        if name == "step":
            seen = {"n": 0}

            def arm():
                seen["n"] += 1
                if seen["n"] == 3:
                    holder["model"].armed.set()

            first = await asyncio.gather(collect(a, arm), collect(b))
        else:
            first = await asyncio.gather(collect(a), collect(b))
        after = await collect(submit("What is the capital of France?", 8))
        return {"first": first, "after": after, "active": engine.active_sequences, "state": engine.state}
    finally:
        engine.stop()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(scenario(sys.argv[1], Path(sys.argv[2])))), flush=True)
    # as the server's worker does (server/worker.py): MLX used from the engine thread can abort
    # the interpreter's teardown (ml-explore/mlx#3126); everything is printed, so leave directly
    sys.stderr.flush()
    os._exit(0)
