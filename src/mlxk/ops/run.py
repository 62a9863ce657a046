"""``run``: resolve, check, load and generate. The CLI only parses and renders.

One prompt (:func:`run_once`, the ``--json`` envelope) or a conversation (:class:`Chat`).
The sampling options are the server's :class:`~mlxk.engine.requests.SamplingParams`, one
flag per field, validated before anything is resolved or loaded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from mlxk.contract import Envelope, MlxkError
from mlxk.inspection.classify import Capability
from mlxk.inspection.model_object import inspect
from mlxk.ops.system import memory_available_bytes
from mlxk.store.names import resolve

# Loading needs the weights plus working memory; refuse before loading when that can't fit.
MEMORY_HEADROOM = 1.2

# What ``run`` uses when neither a flag nor the model's generation_config.json says: greedy,
# 512 tokens (the server's default request is the OpenAI one: temperature 1).
RUN_DEFAULTS: dict[str, Any] = {"max_tokens": 512, "temperature": 0.0}
# Options a model's generation_config.json may set (unless it says do_sample: false).
MODEL_DEFAULTS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")
# RunRequest field -> SamplingParams field; the flag is the field with dashes.
SAMPLING_FIELDS = ("max_tokens", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "seed", "stop")


@dataclass
class RunRequest:
    model: str
    prompt: str | None
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    chat_template: bool = True
    json_schema: str | None = None  # a JSON Schema file the answer must match (--json-schema)
    json_object: bool = False  # the answer must be a JSON object (--json-object)

    def output_format(self):
        """The structured-output request (engine/constraints.py), checked before anything loads."""
        import json
        from pathlib import Path

        from mlxk.engine.constraints import SchemaError, check
        from mlxk.engine.requests import GenerationRequest, OutputFormat, SamplingParams

        if self.json_schema is None:
            return OutputFormat("json_object") if self.json_object else None
        name = Path(self.json_schema).name  # never an absolute path in an answer
        try:
            schema = json.loads(Path(self.json_schema).read_text(encoding="utf-8"))
        except OSError as exc:
            raise MlxkError("ValidationError", f"--json-schema: cannot read {name}: {exc.strerror}") from None
        except ValueError as exc:
            raise MlxkError("ValidationError", f"--json-schema: {name} is not JSON: {exc}") from None
        if not isinstance(schema, dict):
            raise MlxkError("ValidationError", f"--json-schema: {name} must hold a JSON object")
        fmt = OutputFormat("json_schema", schema, Path(self.json_schema).stem)
        try:
            check(GenerationRequest(None, SamplingParams(), messages=[], output_format=fmt))
        except SchemaError as exc:
            raise MlxkError("ValidationError", f"--json-schema: {exc.message}") from None
        return fmt

    def sampling(self):
        """The options given (None = not given) as SamplingParams; bad values name their flag."""
        from pydantic import ValidationError

        from mlxk.engine.requests import SamplingParams

        given: dict[str, Any] = {k: getattr(self, k) for k in SAMPLING_FIELDS if getattr(self, k) is not None}
        given["stop"] = list(self.stop)
        try:
            return SamplingParams(**given)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = str(err["loc"][0]) if err["loc"] else ""
            flag = "--" + field.replace("_", "-")
            raise MlxkError("ValidationError", f"{flag}: {err['msg']} (got {err.get('input')!r})") from None


def with_model_defaults(given, generation_config: dict[str, Any]):
    """Flags win; the model's generation_config.json fills what the user left out; then RUN_DEFAULTS.

    A generation_config value the engine would refuse (out of range, wrong type) is left out.
    """
    from pydantic import ValidationError

    from mlxk.engine.requests import SamplingParams

    values = dict(RUN_DEFAULTS)
    if generation_config.get("do_sample", True) is not False:
        for key in MODEL_DEFAULTS:
            value = generation_config.get(key)
            if value is None:
                continue
            try:
                SamplingParams(**{key: value})
            except ValidationError:
                continue
            values[key] = value
    values.update({k: getattr(given, k) for k in given.model_fields_set})
    return SamplingParams(**values)


def fit(params, model):
    """The options bounded by the model's vocabulary, as the server bounds them."""
    from mlxk.engine.sampling import OutOfVocabulary, fit_to_vocabulary

    try:
        return fit_to_vocabulary(params, getattr(getattr(model, "args", None), "vocab_size", None))
    except OutOfVocabulary as exc:
        flag = "--" + exc.field.replace("_", "-")
        raise MlxkError("ValidationError", f"{flag}: must be at most the model's vocabulary size ({exc.vocab}) "
                                           f"(got {getattr(params, exc.field)})") from None


def check_runnable(spec: str):
    """Resolve and gate a model before anything heavy is imported (exit 1, nothing loaded)."""
    item = inspect(resolve(spec))
    if not item.healthy:
        raise MlxkError("unhealthy", f"Model {item.ref.name} is unhealthy: {item.health_reason}", model=item.ref.name)
    if not item.runtime_compatible:
        raise MlxkError("not_runnable", f"Model {item.ref.name} cannot run here: {item.reason}", model=item.ref.name)
    available = memory_available_bytes()
    size = item.model_object()["size_bytes"]
    if available is not None and size * MEMORY_HEADROOM > available:
        raise MlxkError(
            "not_runnable",
            f"Model {item.ref.name} needs about {size * MEMORY_HEADROOM / 2**30:.1f} GiB but only "
            f"{available / 2**30:.1f} GiB of memory is available",
            model=item.ref.name,
        )
    return item


class Chat:
    """A model loaded for a conversation; each turn streams its text and keeps the KV cache."""

    def __init__(self, req: RunRequest):
        from mlxk.engine.generate import ChatSession
        from mlxk.engine.loader import load

        given = req.sampling()  # refuse bad flags before resolving or loading anything
        self.output_format = req.output_format()
        item = check_runnable(req.model)
        self.name: str = item.ref.name
        self.model_type: str = item.model_type
        # A base model (no chat template) continues the prompt as plain text, as /v1/completions does.
        self.chat_template: bool = req.chat_template and Capability.CHAT.value in item.capabilities
        self.loaded = load(item.ref.path)
        self.sampling = fit(with_model_defaults(given, self.loaded.generation_config), self.loaded.model)
        self._session = ChatSession(self.loaded, system=req.system, use_template=self.chat_template)

    @property
    def note(self) -> str | None:
        """What the user should know before the text comes (None: nothing)."""
        if self.model_type == "base":
            return (f"{self.name} is a base model (no chat template): the prompt is completed as plain text, "
                    "not answered as a chat message")
        return None

    def turn(self, text: str, stats) -> Iterator[str]:
        """The answer to ``text``, piece by piece; ``stats`` (engine.generate.Stats) is filled in."""
        for chunk in self._session.turn(text, self.sampling, stats, self.output_format):
            yield chunk.text

    def clear(self) -> None:
        self._session.reset()

    def set_system(self, system: str | None) -> None:
        """A new system prompt starts the conversation over."""
        self._session.system = system
        self._session.reset()


def new_stats():
    from mlxk.engine.generate import Stats

    return Stats()


def run_once(req: RunRequest, on_text: Callable[[str], None] | None = None,
             on_note: Callable[[str], None] | None = None) -> Envelope:
    """One prompt, one answer. ``on_text`` receives the stream as it comes; ``on_note`` the
    model's :attr:`Chat.note` (a base model: plain completion) before it."""
    chat = Chat(req)
    if on_note and chat.note:
        on_note(chat.note)
    stats = new_stats()
    parts: list[str] = []
    start = time.perf_counter()
    for text in chat.turn(req.prompt or "", stats):
        parts.append(text)
        if on_text:
            on_text(text)
    elapsed = time.perf_counter() - start
    data: dict[str, Any] = {
        "model": chat.name,
        "prompt": req.prompt,
        "response": "".join(parts),
        "tokens_generated": stats.generated_tokens,
        "prompt_tokens": stats.prompt_tokens,
        "generation_time_s": round(elapsed, 4),
        "tokens_per_second": round(stats.generation_tps, 2),
        "prompt_tokens_per_second": round(stats.prompt_tps, 2),
        "peak_memory_gb": round(stats.peak_memory_gb, 3),
        "finish_reason": stats.finish_reason,
        "model_type": chat.model_type,  # "base": no chat template, the prompt was completed as text
        "chat_template": chat.chat_template,  # whether the prompt went through the chat template
    }
    return Envelope.success("run", data)
