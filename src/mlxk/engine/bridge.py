"""The engine thread -> asyncio loop bridge: per-request event queues and batched wake-ups."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from mlxk.engine.requests import Event, GenerationRequest


class RequestHandle:
    """The adapter's side of one request: an asyncio queue of events, and cancel()."""

    def __init__(self, loop, request: GenerationRequest):
        import asyncio

        self.loop = loop
        self.request = request
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.cancelled = False
        self.submitted = time.monotonic()

    def cancel(self) -> None:
        self.cancelled = True

    def post(self, event: Event) -> None:
        pending = getattr(_outbox, "events", None)
        if pending is not None:
            pending.append((self, event))
            return
        _deliver_soon(self.loop, [(self, event)])

    async def next(self) -> Event:
        return await self.queue.get()

    async def next_within(self, seconds: float) -> Event | None:
        """The next event, or None after ``seconds`` (a stream sends a keep-alive then)."""
        import asyncio

        try:
            return await asyncio.wait_for(self.queue.get(), seconds)
        except asyncio.TimeoutError:
            return None


_outbox = threading.local()


@contextlib.contextmanager
def posts_per_step():
    """Hold the events this thread posts and hand them over in one wake-up per event loop.

    A decode step of 16 streams posts 16 deltas; one ``call_soon_threadsafe`` for all of
    them (instead of one self-pipe write and loop wake-up each) leaves more of a small
    machine's CPUs to the model. Order per stream is kept.
    """
    _outbox.events = []
    try:
        yield
    finally:
        events, _outbox.events = _outbox.events, None
        by_loop: dict[Any, list] = {}
        for handle, event in events:
            by_loop.setdefault(handle.loop, []).append((handle, event))
        for loop, batch in by_loop.items():
            _deliver_soon(loop, batch)


def _deliver_soon(loop, batch: list) -> None:
    def deliver() -> None:
        for handle, event in batch:
            handle.queue.put_nowait(event)

    try:
        loop.call_soon_threadsafe(deliver)
    except RuntimeError:  # loop closed
        pass

