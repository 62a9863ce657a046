"""Request fields a protocol defines but this server does not honour: one rule for all four.

A field the server reads and does not act on (``user``, ``metadata``, ``safetySettings``, a
reasoning-effort hint) and a field no protocol defines (a vendor extra, a typo) are *ignored*:
the request runs, and one log line names them all (``openai.chat request: ignored fields:
user, messages[].cache_control``). A field that would change the answer and cannot be honoured
(more than one choice, audio output, logit bias, a server-side search tool) is *refused*: a
400 in the protocol's own error shape naming the field, never an answer that silently differs
from what was asked. Hints whose absence only changes how an answer is reached (reasoning
effort, service tier, caching keys) are ignored, so agents that always send them keep working.

Each protocol module marks its pydantic fields with :class:`Ignored` or :class:`Refused` and
calls :func:`review` on the validated request; unknown keys are recorded as each model is
validated (:class:`Reviewed`), whatever its ``extra`` setting.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import cache
from typing import Any, Callable, ClassVar, Iterator, get_args

from pydantic import BaseModel, PrivateAttr, model_validator

from mlxk.engine.requests import EngineError

log = logging.getLogger("mlxk.server")


def given(value: Any) -> bool:
    return value is not None


def truthy(value: Any) -> bool:
    """Set to something other than its neutral value (false, 0, empty, null)."""
    return bool(value)


def more_than_one(value: Any) -> bool:
    return value is not None and value > 1


@dataclass(frozen=True)
class Ignored:
    """Field metadata: read, accepted, not honoured; logged by name when a request sets it."""


@dataclass(frozen=True)
class Refused:
    """Field metadata: a value for which ``when`` holds would change the answer and is not
    supported here: the request is refused with 400 naming the field and saying ``why``."""

    why: str
    when: Callable[[Any], bool] = given


class Reviewed(BaseModel):
    """A request model that remembers which keys of its JSON object it did not know."""

    _unknown: tuple[str, ...] = PrivateAttr(default=())
    kept_extras: ClassVar[bool] = False  # True: unknown keys are passed on (a schema's keywords), not ignored

    @model_validator(mode="wrap")
    @classmethod
    def _note_unknown(cls, data: Any, handler):
        obj = handler(data)
        if isinstance(data, dict) and isinstance(obj, Reviewed) and not cls.kept_extras:
            known = _keys(type(obj))
            unknown = tuple(k for k in data if k not in known)
            if unknown:
                obj._unknown = unknown
        return obj


@cache
def _keys(model: type[BaseModel]) -> frozenset[str]:
    """Every spelling a field of ``model`` is accepted under (its name, its aliases)."""
    out: set[str] = set()
    for name, info in model.model_fields.items():
        out.add(name)
        if info.alias:
            out.add(info.alias)
        choices = getattr(info.validation_alias, "choices", None)
        if isinstance(info.validation_alias, str):
            out.add(info.validation_alias)
        for c in choices or ():
            if isinstance(c, str):
                out.add(c)
    return frozenset(out)


@cache
def _holds_models(model: type[BaseModel], name: str) -> bool:
    """Whether field ``name`` can hold models (free-form JSON such as a schema is not walked)."""
    todo = [model.model_fields[name].annotation]
    while todo:
        t = todo.pop()
        if isinstance(t, type) and issubclass(t, BaseModel):
            return True
        todo += [a for a in get_args(t) if not isinstance(a, (str, int, float, bool)) or a is None]
    return False


def _marks(info) -> Iterator[Ignored | Refused]:
    return (m for m in info.metadata if isinstance(m, (Ignored, Refused)))


def _walk(obj: Any, path: str) -> Iterator[tuple[str, Any, Ignored | Refused | None]]:
    """(path, value, mark) of every set field below ``obj``; mark None: a key no model knew."""
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            yield from _walk(item, f"{path}[{i}]")
        return
    if isinstance(obj, dict):
        for k, item in obj.items():
            if isinstance(item, (BaseModel, list, dict)):
                yield from _walk(item, f"{path}.{k}" if path else str(k))
        return
    if not isinstance(obj, BaseModel):
        return
    prefix = f"{path}." if path else ""
    for name, info in type(obj).model_fields.items():
        if name not in obj.model_fields_set:
            continue
        value = getattr(obj, name)
        where = prefix + (info.alias or name)
        for mark in _marks(info):
            yield where, value, mark
        if isinstance(value, BaseModel) or isinstance(value, (list, dict)) and _holds_models(type(obj), name):
            yield from _walk(value, where)
    for key in obj._unknown if isinstance(obj, Reviewed) else ():
        yield prefix + key, None, None


def unsupported(path: str, why: str) -> EngineError:
    return EngineError(400, f"Unsupported parameter '{path}': {why}", param=path, code="unsupported_parameter")


def review(req: BaseModel, protocol: str) -> list[str]:
    """Refuse ``req`` (EngineError 400) if it sets a field marked :class:`Refused` to a value
    that changes the answer; otherwise log, in one line, every ignored or unknown field it
    sets (list indices folded: ``messages[].name``). Returns those names."""
    ignored: list[str] = []
    for path, value, mark in _walk(req, ""):
        if isinstance(mark, Refused):
            if mark.when(value):
                raise unsupported(path, mark.why)
        elif mark is None or value is not None:
            folded = re.sub(r"\[\d+\]", "[]", path)
            if folded not in ignored:
                ignored.append(folded)
    if ignored:
        log.info("%s request: ignored fields: %s", protocol, ", ".join(ignored))
    return ignored
