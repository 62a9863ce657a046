"""Wire-neutral request and event types: what an adapter hands the engine and reads back.

Every protocol module (OpenAI, later Anthropic, Gemini) translates its JSON into a
:class:`GenerationRequest` and the engine's :class:`Event` stream back into its own shape;
nothing here knows any wire format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class EngineError(Exception):
    """A failure an adapter turns into its own error shape."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code


CANCELLED = EngineError(499, "The client went away", "invalid_request_error", code="cancelled")


# Ranges of the sampling options, one definition each; the wire models (server/openai_models.py)
# reuse these types so a bad value is refused under the wire's own field name.
MAX_SEED = 2**64 - 1  # mx.random.seed/key take an unsigned 64-bit integer: -1 or 2**64 raise TypeError
MAX_STOPS = 16
Temperature = Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
TopK = Annotated[int, Field(ge=0)]  # the engine also bounds it by the model's vocabulary
Penalty = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
MaxTokens = Annotated[int, Field(ge=1)]
TopLogprobs = Annotated[int, Field(ge=0)]


class SamplingParams(BaseModel):
    """How to pick tokens, for ``serve`` and ``run`` alike; wire-neutral and validated on creation.

    Every number is checked here (finite, in range) because one bad value reaching the engine
    would fail a whole batch step. ``repetition_penalty`` None means off.
    """

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    max_tokens: MaxTokens | None = None
    temperature: Temperature = 1.0
    top_p: Probability = 1.0
    top_k: TopK = 0
    min_p: Probability = 0.0
    repetition_penalty: Penalty | None = None
    seed: Seed | None = None
    stop: list[str] = Field(default_factory=list, max_length=MAX_STOPS)
    logprobs: bool = False
    top_logprobs: TopLogprobs = 0

    def filled_from(self, defaults: "SamplingParams | None") -> "SamplingParams":
        """These options, with ``defaults`` (the server's, themselves validated) wherever this
        request set nothing: an explicit value always wins."""
        if defaults is None:
            return self
        update = {k: getattr(defaults, k) for k in defaults.model_fields_set
                  if k not in self.model_fields_set or getattr(self, k) is None}
        return self.model_copy(update=update) if update else self


@dataclass
class ModelTarget:
    """Which model a request runs on: a folder and the name shown to clients."""

    key: str
    path: Path
    name: str


@dataclass(frozen=True)
class OutputFormat:
    """What the answer must be, whatever the protocol asked it with (OpenAI response_format,
    Anthropic output_format, Responses text.format, Gemini responseSchema).

    ``kind``: "text" (free), "json_object" (any JSON object) or "json_schema" (``schema``).
    """

    kind: str = "text"
    schema: dict | None = None
    name: str | None = None
    strict: bool = False


@dataclass
class GenerationRequest:
    """One generation, wire-neutral. Every protocol adapter maps its request onto this.

    ``messages`` use the chat-template shape (role, content, tool_calls, tool_call_id, name);
    ``tools`` the OpenAI function shape ({"type": "function", "function": {name, description,
    parameters}}) that Hugging Face chat templates take; ``tool_choice`` is "auto", "none",
    "required" or a tool's name.
    """

    target: ModelTarget | None  # None: the loaded model
    params: SamplingParams
    messages: list[dict] | None = None  # chat
    prompt: str | list[int] | None = None  # plain completion
    tools: list[dict] | None = None
    prompt_field: str = "messages"
    tool_choice: str | None = None
    output_format: OutputFormat | None = None


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
class ToolCall:
    """A call the model made: ``arguments`` is the JSON text of the arguments object."""

    id: str
    name: str
    arguments: str


@dataclass
class Event:
    """``kind``: start | delta | tool_call | finish | error | interrupt.

    A ``delta`` carries answer ``text`` and/or ``reasoning`` text (thinking, never shown as
    the answer); a ``tool_call`` event carries one complete ``tool_call``. ``finish_reason``
    is "stop", "length" or "tool_calls"; adapters map it to their protocol's names.
    """

    kind: str
    text: str = ""
    reasoning: str = ""
    tool_call: ToolCall | None = None
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    error: EngineError | None = None
    model: str | None = None
    stop_sequence: str | None = None  # on finish: the stop string that ended the text (issue 14)

