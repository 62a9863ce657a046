"""Counters the engine keeps for /metrics and /health."""

from __future__ import annotations


class Metrics:
    """Counters for /metrics; written by the engine thread, read by the loop."""

    TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

    def __init__(self):
        self.requests = 0
        self.requests_failed = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.ttft_counts = [0] * (len(self.TTFT_BUCKETS) + 1)
        self.ttft_sum = 0.0
        self.ttft_n = 0
        self.batch_size_sum = 0
        self.batch_steps = 0
        self.cache_hits = 0
        self.cache_misses = 0

    def observe_ttft(self, sec: float) -> None:
        for i, b in enumerate(self.TTFT_BUCKETS):
            if sec <= b:
                self.ttft_counts[i] += 1
                break
        else:
            self.ttft_counts[-1] += 1
        self.ttft_sum += sec
        self.ttft_n += 1

