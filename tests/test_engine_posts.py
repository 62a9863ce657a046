"""Events posted during a decode step reach the asyncio side together, in order, after the step."""

from __future__ import annotations

import asyncio
import threading

from mlxk.engine.bridge import RequestHandle, posts_per_step
from mlxk.engine.requests import Event, GenerationRequest, SamplingParams


def test_a_step_hands_its_events_over_at_once_and_in_order():
    async def main():
        loop = asyncio.get_running_loop()
        handles = [RequestHandle(loop, GenerationRequest(None, SamplingParams())) for _ in range(3)]
        inside_step = threading.Event()
        release = threading.Event()

        def engine_thread():
            with posts_per_step():
                for i in range(4):
                    for n, h in enumerate(handles):
                        h.post(Event("delta", text=f"{n}:{i}"))
                inside_step.set()
                release.wait(5)
            handles[0].post(Event("finish", finish_reason="stop"))  # outside a step: at once

        t = threading.Thread(target=engine_thread)
        t.start()
        await asyncio.get_running_loop().run_in_executor(None, inside_step.wait, 5)
        await asyncio.sleep(0.05)
        held = [h.queue.qsize() for h in handles]  # nothing yet: the step is still running
        release.set()
        await asyncio.get_running_loop().run_in_executor(None, t.join, 5)
        got = []
        for h in handles:
            events = []
            while True:
                e = await asyncio.wait_for(h.next(), 5)
                events.append(e.text or e.finish_reason)
                if h is not handles[0] and len(events) == 4 or e.kind == "finish":
                    break
            got.append(events)
        return held, got

    held, got = asyncio.run(main())
    assert held == [0, 0, 0]
    assert got[0] == ["0:0", "0:1", "0:2", "0:3", "stop"]
    assert got[1] == ["1:0", "1:1", "1:2", "1:3"] and got[2] == ["2:0", "2:1", "2:2", "2:3"]
