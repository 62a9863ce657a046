"""``run``: resolve, check, load and generate. The CLI streams; --json gets the envelope."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from mlxk.contract import Envelope, MlxkError
from mlxk.inspection.model_object import inspect
from mlxk.ops.system import memory_available_bytes
from mlxk.store.names import resolve

# Loading needs the weights plus working memory; refuse before loading when that can't fit.
MEMORY_HEADROOM = 1.2


@dataclass
class RunRequest:
    model: str
    prompt: str | None
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    chat_template: bool = True


def check_runnable(spec: str):
    """Resolve and gate a model before anything heavy is imported (exit 1, nothing loaded)."""
    item = inspect(resolve(spec))
    if not item.healthy:
        raise MlxkError("unhealthy", f"Model {item.ref.name} is unhealthy: {item.health_reason}", model=item.ref.name)
    if not item.runtime_compatible:
        raise MlxkError("not_runnable", f"Model {item.ref.name} cannot run here: {item.reason}", model=item.ref.name)
    available = memory_available_bytes()
    size = item.model_object()["size_bytes"]
    if available is not None and size * MEMORY_HEADROOM > available:
        raise MlxkError(
            "not_runnable",
            f"Model {item.ref.name} needs about {size * MEMORY_HEADROOM / 2**30:.1f} GiB but only "
            f"{available / 2**30:.1f} GiB of memory is available",
            model=item.ref.name,
        )
    return item


def sampling_for(loaded, req: RunRequest):
    from mlxk.engine.generate import Sampling

    return Sampling.with_defaults(
        loaded.generation_config,
        max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
        min_p=req.min_p, repetition_penalty=req.repetition_penalty, seed=req.seed, stop=req.stop,
    )


def run_once(req: RunRequest, on_text: Callable[[str], None] | None = None) -> Envelope:
    """One prompt, one answer. ``on_text`` receives the stream as it comes."""
    from mlxk.engine.generate import ChatSession, Stats
    from mlxk.engine.loader import load

    item = check_runnable(req.model)
    loaded = load(item.ref.path)
    session = ChatSession(loaded, system=req.system, use_template=req.chat_template)
    stats = Stats()
    parts: list[str] = []
    start = time.perf_counter()
    for chunk in session.turn(req.prompt or "", sampling_for(loaded, req), stats):
        parts.append(chunk.text)
        if on_text:
            on_text(chunk.text)
    elapsed = time.perf_counter() - start
    data: dict[str, Any] = {
        "model": item.ref.name,
        "prompt": req.prompt,
        "response": "".join(parts),
        "tokens_generated": stats.generated_tokens,
        "prompt_tokens": stats.prompt_tokens,
        "generation_time_s": round(elapsed, 4),
        "tokens_per_second": round(stats.generation_tps, 2),
        "prompt_tokens_per_second": round(stats.prompt_tps, 2),
        "peak_memory_gb": round(stats.peak_memory_gb, 3),
        "finish_reason": stats.finish_reason,
    }
    return Envelope.success("run", data)
