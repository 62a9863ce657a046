"""The prefill pacer against a machine whose tick costs are known: it alternates chunk and
decode-only ticks while streams decode, settles where a pair of ticks takes its target,
follows costs that grow with the context, and never shrinks a chunk for a short last piece."""

from __future__ import annotations

import pytest

from mlxk.engine.pacing import BUSY_PAIR_S, IDLE_TICK_S, MAX_STEP, MIN_STEP, PrefillPacer


def run(pacer: PrefillPacer, ticks: int, decode_s: float, fixed_s: float, per_token_s, decoding=True):
    """Drive the pacer for ``ticks``; returns [(tokens, seconds)] of every tick.

    A tick costs ``decode_s`` (when streams decode) plus, with a chunk, ``fixed_s`` and
    ``per_token_s(done) * n`` (the per-token cost may grow with the prompt done so far)."""
    done, out = 0, []
    for _ in range(ticks):
        n = pacer.plan(decoding, 1)
        seconds = decode_s if decoding else 0.0
        if n is not None:
            seconds += fixed_s + per_token_s(done) * n
            done += n
        pacer.observe(decoding, n or 0, seconds)
        out.append((n or 0, seconds))
    return out


def test_ticks_alternate_while_streams_decode_and_a_pair_settles_at_its_target():
    pacer = PrefillPacer()
    ticks = run(pacer, 60, decode_s=0.08, fixed_s=0.15, per_token_s=lambda done: 0.006)
    chunked = [i for i, (n, _) in enumerate(ticks) if n]
    assert all(b - a == 2 for a, b in zip(chunked, chunked[1:]))  # one chunk tick, one decode-only tick
    pairs = [a[1] + b[1] for a, b in zip(ticks[-20::2], ticks[-19::2])]
    assert all(0.85 * BUSY_PAIR_S <= p <= 1.15 * BUSY_PAIR_S for p in pairs), pairs
    # and that is the biggest chunk the target allows: (0.6 - 2 x 0.08 - 0.15) / 0.006 = 48 tokens
    assert 40 <= ticks[-1][0] + ticks[-2][0] <= 56


def test_a_chunk_grows_from_a_small_first_guess_on_a_fast_machine():
    pacer = PrefillPacer()
    ticks = run(pacer, 40, decode_s=0.01, fixed_s=0.01, per_token_s=lambda done: 0.0002)
    assert max(n for n, _ in ticks) >= 1500  # ~(0.6 - 0.03) / 0.0002 = 2850, capped by MAX_STEP
    assert max(n for n, _ in ticks) <= MAX_STEP


def test_a_chunk_follows_a_cost_that_grows_with_the_context():
    pacer = PrefillPacer()
    ticks = run(pacer, 200, decode_s=0.08, fixed_s=0.1, per_token_s=lambda done: 0.004 + done * 2e-6)
    late = [a[1] + b[1] for a, b in zip(ticks[-20::2], ticks[-19::2])]
    assert max(late) <= 1.2 * BUSY_PAIR_S, late
    early_chunk = max(n for n, _ in ticks[:40])
    assert ticks[-1][0] + ticks[-2][0] < early_chunk  # smaller chunks as attention costs more


def test_a_fixed_cost_above_the_target_leaves_the_smallest_chunk():
    pacer = PrefillPacer()
    ticks = run(pacer, 30, decode_s=0.1, fixed_s=0.8, per_token_s=lambda done: 0.01)
    assert ticks[-1][0] + ticks[-2][0] == MIN_STEP  # still progress, never zero


def test_when_decoding_alone_fills_the_pair_prefill_keeps_a_third_of_the_time():
    pacer = PrefillPacer()  # many rows on a small CPU: a decode-only tick takes 0.9 s
    ticks = run(pacer, 60, decode_s=0.9, fixed_s=0.1, per_token_s=lambda done: 0.005)
    chunk_tick = next(t for t in reversed(ticks) if t[0])
    assert chunk_tick[1] == pytest.approx(2 * 0.9, rel=0.15)  # (1.8 - 0.9 - 0.1) / 0.005 = 160 tokens
    assert chunk_tick[0] > 100


def test_nothing_decoding_means_no_decode_only_ticks_and_the_idle_target():
    pacer = PrefillPacer()
    ticks = run(pacer, 30, decode_s=0.0, fixed_s=0.05, per_token_s=lambda done: 0.002, decoding=False)
    assert all(n for n, _ in ticks)
    assert ticks[-1][1] == pytest.approx(IDLE_TICK_S, rel=0.15)


def test_a_short_last_piece_says_nothing_about_a_full_chunk():
    pacer = PrefillPacer()
    run(pacer, 39, decode_s=0.08, fixed_s=0.15, per_token_s=lambda done: 0.006)  # ends on a decode-only tick
    settled = pacer.tokens[True]
    assert pacer.plan(True, 1) is not None
    pacer.observe(True, 3, 0.2)  # the prompt ended 3 tokens in: quick, as a short piece is
    assert pacer.tokens[True] == settled


def test_prompts_prefilled_together_share_the_chunk():
    alone, together = PrefillPacer(), PrefillPacer()
    for pacer in (alone, together):
        run(pacer, 39, decode_s=0.08, fixed_s=0.15, per_token_s=lambda done: 0.006)
    one, four = alone.plan(True, 1), together.plan(True, 4)
    assert one > 4 * MIN_STEP
    assert four == one // 4
