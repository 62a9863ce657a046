"""One sequence's side of a decode step: its token becomes text, stop strings and grammars
end it, and its events (text, reasoning, tool calls, logprobs, finish) go to its request.

The engine (batch.py) owns the batch, the metrics and the prefix cache; everything here
concerns a single request, so it is the same whatever the batch around it does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlxk.engine.bridge import RequestHandle
from mlxk.engine.requests import Event, TokenLogprob, Usage
from mlxk.engine.stops import StopMatcher


@dataclass
class Sequence:
    handle: RequestHandle
    uid: int
    detok: Any
    stops: StopMatcher  # engine/stops.py, shared with mlxk run
    usage: Usage
    logprobs: bool
    top_logprobs: int
    prompt: list[int]
    buf: str = ""
    lp_buf: list = field(default_factory=list)
    first_token_at: float | None = None
    done: bool = False
    bounds: tuple[int, ...] = ()  # prompt positions worth a disk snapshot (prompting.disk_bounds)
    constraint: Any = None  # structured output: engine/constraints.py (None: free text)
    output: Any = None  # output_parsing.OutputParser: tool calls and reasoning out of the text (None: plain)
    stop_sequence: str | None = None  # the stop string that ended it

    def take(self, token: int, logprobs, finish_reason: str | None, tokenizer) -> tuple[str | None, bool]:
        """One generated token: (the reason it ends, or None; True when a stop string or the
        grammar ended it before mlx-lm did)."""
        if finish_reason != "stop":
            self.detok.add_token(token)
        if finish_reason is not None:
            self.detok.finalize()
        self.buf += self.detok.last_segment
        if self.logprobs:
            self.lp_buf.append(token_logprob(tokenizer, token, logprobs, self.top_logprobs))
        reason, stopped_early = finish_reason, False
        if self.stops:
            hit = self.stops.find(self.buf)
            if hit >= 0:
                self.stop_sequence = next((x for x in self.stops.stops if self.buf.startswith(x, hit)), None)
                self.buf = self.buf[:hit]
                reason, stopped_early = "stop", True
        if self.constraint is not None:  # a finished grammar stops; a forced tool call becomes tool_call events
            self.buf, reason, calls = self.constraint.advance(self.buf, reason)
            stopped_early = stopped_early or (reason is not None and finish_reason is None)
            for call in calls:
                self.handle.post(Event("tool_call", tool_call=call))
        if reason is None:
            self.flush(final=False)
        return reason, stopped_early

    def finish(self, reason: str, model: str) -> None:
        """The rest of the text, then the finish event."""
        self.flush(final=True)
        self.done = True
        if reason == "stop" and self.output is not None and self.output.calls:  # issue 14
            reason = "tool_calls"
        self.handle.post(Event("finish", finish_reason=reason, usage=self.usage, model=model,
                               stop_sequence=self.stop_sequence))

    def flush(self, final: bool) -> None:
        """Send the text no stop string can still claim (all of it when ``final``)."""
        cut = len(self.buf) if final else self.stops.safe_length(self.buf)  # held back: a tail that may begin a stop
        if cut <= 0 and not (final and (self.lp_buf or self.output is not None)):
            return
        text, self.buf = self.buf[:max(cut, 0)], self.buf[max(cut, 0):]
        lps, self.lp_buf = (self.lp_buf or None), []
        if self.output is not None:  # issue 14: markup out, reasoning and tool calls as their own events
            self._post_parsed(self.output.feed(text) + (self.output.finish() if final else []), lps)
        elif text or lps:
            self.handle.post(Event("delta", text=text, logprobs=lps))

    def _post_parsed(self, pieces: list, lps) -> None:
        """output_parsing pieces as events; the step's logprobs ride on the first delta."""
        for kind, value in pieces:
            if kind == "tool_call":
                self.handle.post(Event("tool_call", tool_call=value))
            else:
                self.handle.post(Event("delta", text=value if kind == "text" else "",
                                       reasoning=value if kind == "reasoning" else "", logprobs=lps))
                lps = None
        if lps:
            self.handle.post(Event("delta", logprobs=lps))


def token_logprob(tokenizer, token: int, logprobs, top_n: int) -> TokenLogprob:
    """The chosen token's logprob and the ``top_n`` most likely alternatives."""
    import mlx.core as mx

    top: list[tuple[str, float]] = []
    if top_n > 0:
        idx = mx.argpartition(-logprobs, kth=top_n - 1)[:top_n]
        pairs = sorted(zip(idx.tolist(), logprobs[idx].tolist()), key=lambda x: -x[1])
        top = [(tokenizer.decode([i]), v) for i, v in pairs]
    return TokenLogprob(tokenizer.decode([token]), logprobs[token].item(), top)
