"""Wire-neutral request and event types: what an adapter hands the engine and reads back.

Every protocol module (OpenAI, later Anthropic, Gemini) translates its JSON into a
:class:`GenerationRequest` and the engine's :class:`Event` stream back into its own shape;
nothing here knows any wire format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class EngineError(Exception):
    """A failure an adapter turns into its own error shape."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code


CANCELLED = EngineError(499, "The client went away", "invalid_request_error", code="cancelled")


@dataclass
class SamplingParams:
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass
class ModelTarget:
    """Which model a request runs on: a folder and the name shown to clients."""

    key: str
    path: Path
    name: str


@dataclass
class GenerationRequest:
    target: ModelTarget | None  # None: the loaded model
    params: SamplingParams
    messages: list[dict] | None = None  # chat
    prompt: str | list[int] | None = None  # plain completion
    tools: list[dict] | None = None
    prompt_field: str = "messages"


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    top: list[tuple[str, float]]


@dataclass
class Event:
    kind: str
    text: str = ""
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    error: EngineError | None = None
    model: str | None = None

