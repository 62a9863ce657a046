"""How many prompt tokens one engine tick may prefill, so running streams keep their pace.

mlx-lm's BatchGenerator runs, in one ``next()``, a decode step for every running sequence
and then a chunk of ``prefill_step_size`` tokens for each prompt being processed. A big
chunk is the fastest way through a long prompt, but while others are decoding it is also
the gap between two of their tokens (an 8k-token prompt gave 13.8 s gaps on two CPU
cores). The pacer measures this machine's prefill speed as it goes and picks the chunk
that fits a time budget: short while streams are waiting on tokens, longer when nobody
is (still bounded, so a shutdown or a cancel is seen within about a second or two).
"""

from __future__ import annotations

BUSY_BUDGET_S = 0.25  # a tick's prefill while other streams decode: their inter-token gap
IDLE_BUDGET_S = 1.5  # a tick's prefill when nothing decodes: how soon interrupts are seen
MIN_STEP, MAX_STEP = 16, 2048


class PrefillPacer:
    def __init__(self, initial_rate: float = 128.0):
        # Prompt tokens per second, smoothed. It starts low (a slow CPU's pace): a first chunk
        # that is too small costs a few ticks; one that is too big stalls every stream.
        self.rate = initial_rate

    def observe(self, tokens: int, seconds: float) -> None:
        if tokens >= 8 and seconds > 0:
            self.rate = 0.7 * self.rate + 0.3 * (tokens / seconds)

    def step(self, decoding: bool, prompts: int) -> int:
        """Tokens per prompt for the next tick, ``prompts`` being prefilled together."""
        budget = (BUSY_BUDGET_S if decoding else IDLE_BUDGET_S) * self.rate
        per_prompt = int(budget / max(1, prompts))
        return max(MIN_STEP, min(MAX_STEP, per_prompt))
