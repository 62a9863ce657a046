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
from pathlib import Path
from typing import Any

from mlxk.engine.requests import EngineError, ModelTarget

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


def _not_found(spec: str, why: str) -> EngineError:
    return EngineError(404, f"The model '{spec}' does not exist on this server: {why}", param="model",
                       code="model_not_found")


class ModelAccess:
    """The request's ``model`` → a ModelTarget (None: the preloaded model)."""

    def __init__(self, default_spec: str | None, allow: list[str] | None = None,
                 model_dirs: list[str] | None = None):
        self.default_spec = default_spec
        self.allow = list(allow or [])
        self.model_dirs = [os.path.normpath(os.path.abspath(os.path.expanduser(d))) for d in (model_dirs or [])]
        self._targets: dict[str, ModelTarget] = {}

    async def target_for(self, requested: Any, default: ModelTarget | None) -> ModelTarget | None:
        if requested is not None and not isinstance(requested, str):
            raise EngineError(400, "'model' must be a string", param="model")
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
        return resolve_target(str(real))


def _inside(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:
        return False
