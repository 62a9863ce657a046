"""How many prompt tokens one engine tick may prefill, so running streams keep their pace.

mlx-lm's BatchGenerator runs, in one ``next()``, a decode step for every running sequence
and then a chunk of ``prefill_step_size`` tokens for each prompt being processed. A big
chunk is the fastest way through a long prompt, but while others are decoding it is also
the gap between two of their tokens (an 8k-token prompt gave 13.8 s gaps on two CPU
cores).

The pacer steers the chunk by the measured length of whole ticks, not by a speed estimate.
A chunk costs a fixed part (one more read of every weight, attention over the context so
far) plus a part per token; a tokens-per-second estimate taken from small chunks is mostly
the fixed part, so it only ever shrinks the next chunk (on two cores it sank to 16-token
chunks of 0.4 s: half the machine's prefill speed, for nothing). Feedback on the tick
instead settles where a tick takes its target, whatever the split, and follows the cost
up as the context grows.

While streams decode, ticks alternate: one with a chunk, one that only decodes. A running
stream's text may wait two ticks (a lone space before a digit is held until the digit
comes), so what it feels is a pair of ticks; a pair with one bigger chunk pays the fixed
part once instead of twice (on two cores: about three times the prefill speed, and a
lower worst gap). Targets:

* ``BUSY_PAIR_S``: a chunk tick plus a decode-only tick, while streams decode (when the
  decode-only tick alone takes half of that, as with many rows on a small CPU, a chunk tick
  may take twice a decode-only one: prefill keeps a third of the time);
* ``IDLE_TICK_S``: a tick when nothing decodes (how soon a cancel or a shutdown is seen).
"""

from __future__ import annotations

BUSY_PAIR_S = 0.6  # two ticks while other streams decode: their worst inter-token gap
IDLE_TICK_S = 1.5  # a tick when nothing decodes: how soon interrupts are seen
MIN_STEP, MAX_STEP = 8, 2048
MAX_CHANGE = 2.0  # per tick, either way: one noisy reading does not swing the chunk


class PrefillPacer:
    def __init__(self, first_chunk: int = 16):
        # Prompt tokens a chunk tick prefills in all, busy and idle apart. The first guess is
        # a slow CPU's: a chunk too small costs a few ticks, one too big stalls every stream.
        self.tokens = {True: float(first_chunk), False: 4.0 * first_chunk}
        self.decode_s: float | None = None  # a decode-only tick, smoothed
        self._planned = 0  # tokens the last plan() allowed in all
        self._rest = False  # the next busy tick only decodes

    def plan(self, decoding: bool, prompts: int) -> int | None:
        """Tokens per prompt for the next tick (``prompts`` prefilled together), or None for a
        tick that only decodes."""
        if decoding and (self._rest or self.decode_s is None):
            self._rest = False
            return None
        per_prompt = _clamp(self.tokens[decoding] / max(1, prompts))
        self._planned = per_prompt * max(1, prompts)
        return per_prompt

    def observe(self, decoding: bool, tokens: int, seconds: float) -> None:
        """A tick that prefilled ``tokens`` in all took ``seconds``, its decode included."""
        if seconds <= 0:
            return
        if tokens <= 0:
            if decoding:
                self.decode_s = seconds if self.decode_s is None else 0.7 * self.decode_s + 0.3 * seconds
            return
        self._rest = decoding
        if decoding:  # the chunk tick gets what the decode-only tick leaves of the pair, and when
            # decoding alone fills the pair (many rows), still as long again as a decode: new
            # requests get a third of the time instead of starving
            decode = self.decode_s or 0.0
            target = max(BUSY_PAIR_S - decode, 2 * decode)
        else:
            target = IDLE_TICK_S
        if tokens < self._planned and seconds < target:
            return  # a prompt's short last piece, and quick: it says nothing about a full chunk
        # square root: half way (geometrically) to what this tick says, as noise is large
        factor = min(MAX_CHANGE, max(1 / MAX_CHANGE, (target / seconds) ** 0.5))
        self.tokens[decoding] = min(MAX_STEP * 8.0, max(float(MIN_STEP), tokens * factor))


def _clamp(n: float) -> int:
    return max(MIN_STEP, min(MAX_STEP, int(n)))
