"""Turn a request's sampling options into an mlx-lm sampler and logits processors.

One place for the rule, used by the server engine (per sequence) and by ``mlxk run``, so
the same :class:`SamplingParams` picks the same tokens in both.
"""

from __future__ import annotations

from typing import Callable

from mlxk.engine.requests import SamplingParams


def _seeded_sampler(temp: float, top_p: float, min_p: float, top_k: int, seed: int):
    """Like mlx-lm's make_sampler, but with the request's own random key (reproducible in a batch)."""
    import mlx.core as mx
    from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p

    state = {"key": mx.random.key(seed)}

    def sampler(logprobs):
        if 0 < top_p < 1.0:
            logprobs = apply_top_p(logprobs, top_p)
        if min_p:
            logprobs = apply_min_p(logprobs, min_p)
        if top_k > 0:
            logprobs = apply_top_k(logprobs, top_k)
        state["key"], sub = mx.random.split(state["key"])
        return mx.random.categorical(logprobs * (1 / temp), key=sub)

    return sampler


def make_sampler(p: SamplingParams) -> Callable:
    """Greedy at temperature 0; seeded when the request gives a seed; else mlx-lm's sampler."""
    from mlx_lm.sample_utils import greedy_sampler
    from mlx_lm.sample_utils import make_sampler as mlx_make_sampler

    if p.temperature <= 0:
        return greedy_sampler
    if p.seed is not None:
        return _seeded_sampler(p.temperature, p.top_p, p.min_p, p.top_k, p.seed)
    return mlx_make_sampler(p.temperature, top_p=p.top_p, min_p=p.min_p, top_k=p.top_k)


def make_logits_processors(p: SamplingParams) -> list[Callable]:
    """The processors that reshape logits before sampling (today: the repetition penalty).

    mlx-lm's own ``make_logits_processors`` (its default context of the last 20 tokens,
    prompt included); an empty list when the request asks for none.
    """
    if p.repetition_penalty is None:
        return []
    from mlx_lm.sample_utils import make_logits_processors as mlx_make_logits_processors

    return mlx_make_logits_processors(repetition_penalty=p.repetition_penalty)


class OutOfVocabulary(ValueError):
    """A sampling option larger than the loaded model's vocabulary; ``field`` names it."""

    def __init__(self, field: str, vocab: int):
        super().__init__(f"'{field}' must be at most the vocabulary size ({vocab})")
        self.field, self.vocab = field, vocab


def fit_to_vocabulary(p: SamplingParams, vocab: int | None) -> SamplingParams:
    """Bound ``top_k`` and ``top_logprobs`` by the vocabulary, known only once the model is loaded.

    More than the vocabulary raises :class:`OutOfVocabulary` (sampling would fail mid-step);
    exactly the vocabulary means every token, which mlx-lm's top-k filter (it wants
    k < vocabulary) spells as off.
    """
    if not vocab:
        return p
    for name in ("top_k", "top_logprobs"):
        if getattr(p, name) > vocab:
            raise OutOfVocabulary(name, vocab)
    return p.model_copy(update={"top_k": 0}) if p.top_k == vocab else p


def guard_sampler(sampler: Callable, box: list[int], failures: dict) -> Callable:
    """A sampler whose failure (top_k past the vocabulary, say) ends its own sequence only.

    mlx-lm calls per-sequence samplers row by row inside the batched step; an exception
    there would abort the step for every stream. The guard records it in ``failures`` under
    the uid in ``box`` and returns the argmax so the step completes; the engine then ends
    that sequence with an error.
    """
    from mlx_lm.sample_utils import greedy_sampler

    if sampler is greedy_sampler:  # shared by greedy rows (one batched call); cannot fail
        return sampler

    def guarded(logprobs):
        import mlx.core as mx

        try:
            return sampler(logprobs)
        except Exception as exc:
            failures[box[0] if box else -1] = exc
            return mx.argmax(logprobs, axis=-1)

    return guarded
