"""Which model a request may name, decided before anything touches the file system.

Over HTTP a model is a name from the cache (or the preloaded model's name). Folders are
served only when the operator says so (``--model-dir DIR``), and then only inside those
folders: the check is on the path's text first (no probe of /etc or ~/.ssh answers
differently from any other refusal), then on the resolved path (no way out through a
link), off the event loop and with link loops refused.
"""

from __future__ import annotations

import asyncio
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from mlxk.engine.requests import EngineError, GenerationRequest, ModelTarget

RESOLVE_TIMEOUT_S = 10.0
MAX_MODEL_NAME = 1024


def display_name(spec: str, ref) -> str:
    """Never an absolute path: workspace models are shown by their folder name."""
    if ref.cached:
        return ref.name
    return Path(spec).expanduser().resolve().name


def resolve_target(spec: str) -> ModelTarget:
    """A runnable model for ``spec`` (any name or path: the operator's own) or EngineError 404."""
    from mlxk.contract import MlxkError
    from mlxk.inspection.model_object import inspect
    from mlxk.store.names import resolve

    try:
        ref = resolve(spec)
    except MlxkError as err:
        raise EngineError(404, f"The model '{spec}' does not exist: {err.message}", param="model",
                          code="model_not_found") from err
    info = inspect(ref)
    if not info.healthy or not info.runtime_compatible or info.framework != "MLX" or ref.path is None:
        reason = info.reason or info.health_reason or f"framework {info.framework} is not runnable"
        raise EngineError(404, f"The model '{spec}' is not runnable: {reason}", param="model", code="model_not_runnable")
    return ModelTarget(key=str(Path(ref.path).resolve()), path=Path(ref.path), name=display_name(spec, ref))


@lru_cache(maxsize=64)
def has_chat_template(folder: str) -> bool:
    """Whether the model in ``folder`` has a chat template (read once per folder: a served
    model's files do not change under it)."""
    from mlxk.inspection.classify import has_chat_template as in_files
    from mlxk.inspection.files import ModelFiles

    return in_files(ModelFiles.read(Path(folder)))


def check_chat_capable(gen: GenerationRequest, target: ModelTarget | None) -> None:
    """A chat request (messages) for a base model is the client's 400, in every protocol.

    A base model has no chat template: there is no right way to turn messages into its
    prompt, and guessing one gives confident nonsense. It still continues text, so the
    refusal says where: ``/v1/completions``.
    """
    if gen.messages is None or target is None or has_chat_template(str(target.path)):
        return
    raise EngineError(400, f"The model '{target.name}' is a base model (no chat template): it continues text "
                           "and cannot answer chat messages. Send the text as 'prompt' to /v1/completions instead.",
                      param="model", code="model_not_chat")


def parse_aliases(values: list[str]) -> dict[str, str]:
    """``--alias NAME=MODEL`` flags as {NAME: MODEL}; a malformed or repeated NAME is refused."""
    from mlxk.contract import MlxkError

    out: dict[str, str] = {}
    for value in values:
        name, sep, model = value.partition("=")
        name, model = name.strip(), model.strip()
        if not sep or not name or not model:
            raise MlxkError("ValidationError", f"--alias wants NAME=MODEL, got '{value}'", exit_code=2)
        if name in out:
            raise MlxkError("ValidationError", f"--alias {name} is given twice", exit_code=2)
        out[name] = model
    return out


def _not_found(spec: str, why: str) -> EngineError:
    return EngineError(404, f"The model '{spec}' does not exist on this server: {why}", param="model",
                       code="model_not_found")


class ModelAccess:
    """The request's ``model`` → a ModelTarget (None: the preloaded model)."""

    def __init__(self, default_spec: str | None, allow: list[str] | None = None,
                 model_dirs: list[str] | None = None, aliases: dict[str, str] | None = None):
        self.default_spec = default_spec
        self.aliases = dict(aliases or {})  # --alias NAME=MODEL: the operator's, so any name or path
        self.allow = list(allow or [])
        self.model_dirs = [os.path.normpath(os.path.abspath(os.path.expanduser(d))) for d in (model_dirs or [])]
        self._targets: dict[str, ModelTarget] = {}

    async def target_for(self, requested: Any, default: ModelTarget | None) -> ModelTarget | None:
        if requested is not None and not isinstance(requested, str):
            raise EngineError(400, "'model' must be a string", param="model")
        aliased = self.alias_of(requested, default)
        if aliased is not None:  # aliases first: agents send names like claude-sonnet-5-5
            return await self._operator_target(aliased, default)
        if not requested or (default and requested in (default.name, self.default_spec)):
            if default is None:
                raise EngineError(400, "No default model: name one in 'model'", param="model")
            return None
        if len(requested) > MAX_MODEL_NAME or "\x00" in requested:
            raise EngineError(400, f"'model' must be a model name of at most {MAX_MODEL_NAME} characters",
                              param="model")
        if requested in self._targets:
            return self._targets[requested]
        from mlxk.store.names import is_path_spec

        if is_path_spec(requested):
            target = await self._off_loop(self._path_target, requested)
        else:
            target = await self._off_loop(resolve_target, requested)
        if self.allow and not (requested in self.allow or target.name in self.allow):
            raise EngineError(404, f"The model '{requested}' is not allowed on this server (see --allow)",
                              param="model", code="model_not_allowed")
        if default and target.key == default.key:
            return None
        self._targets[requested] = target
        return target

    def alias_of(self, requested: str | None, default: ModelTarget | None) -> str | None:
        """The MODEL of ``--alias NAME=MODEL`` for ``requested``. ``*`` takes every name that is no
        other alias, not the preloaded model's and not an ``--allow`` entry."""
        if not requested or not self.aliases:
            return None
        if requested in self.aliases:
            return self.aliases[requested]
        own = (default.name, self.default_spec) if default else (self.default_spec,)
        if "*" in self.aliases and requested not in own and requested not in self.allow:
            return self.aliases["*"]
        return None

    async def _operator_target(self, spec: str, default: ModelTarget | None) -> ModelTarget | None:
        if default and spec in (default.name, self.default_spec):
            return None
        key = "\x00alias:" + spec  # never a requested name (those have no NUL)
        if key not in self._targets:
            self._targets[key] = await self._off_loop(resolve_target, spec)
        target = self._targets[key]
        return None if default and target.key == default.key else target

    def alias_targets(self) -> dict[str, ModelTarget]:
        """Every named alias and its model (for the model lists; runs in a thread). An alias whose
        model does not resolve is left out of the list (a request naming it gets the reason)."""
        out = {}
        for name, spec in self.aliases.items():
            if name == "*":
                continue
            try:
                out[name] = resolve_target(spec)
            except EngineError:
                continue
        return out

    @staticmethod
    async def _off_loop(fn, spec: str) -> ModelTarget:
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, spec), RESOLVE_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise EngineError(404, f"The model '{spec}' could not be resolved in time", param="model",
                              code="model_not_found") from None

    def _path_target(self, spec: str) -> ModelTarget:
        """Runs in a thread. Text check first: nothing outside --model-dir is ever looked at."""
        if not self.model_dirs:
            raise _not_found(spec, "paths are not accepted over HTTP (start the server with --model-dir DIR "
                                   "to serve the model folders inside DIR)")
        lexical = os.path.normpath(os.path.abspath(os.path.expanduser(spec)))
        if not any(_inside(lexical, d) for d in self.model_dirs):
            raise _not_found(spec, "only folders inside the server's --model-dir folders are served")
        try:
            real = Path(lexical).resolve(strict=True)
        except RuntimeError:  # "Symlink loop from ..."
            raise _not_found(spec, "the path is a link loop") from None
        except OSError:
            raise _not_found(spec, "no such folder") from None
        if not any(_inside(str(real), os.path.realpath(d)) for d in self.model_dirs):
            raise _not_found(spec, "only folders inside the server's --model-dir folders are served")
        try:
            return resolve_target(str(real))
        except OSError as exc:  # an unreadable folder is the client's 404, never the server's 500
            raise _not_found(spec, f"the folder cannot be read ({exc.strerror})") from None


def _inside(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:
        return False
