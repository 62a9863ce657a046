"""Loading a model for the serving engine, and remembering loads that failed.

A failed load must never take the server down with it: the engine restores the model it
had, reports the failure on /health, and answers later requests for the same broken
folder at once (until its files change) instead of unloading the working model again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mlxk.engine.requests import EngineError, ModelTarget

log = logging.getLogger("mlxk.engine")


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    eos_ids: set[int]


def load_model(target: ModelTarget, load_fn: Callable[[Path], tuple[Any, Any]] | None = None,
               trust_remote_code: bool = False) -> LoadedModel:
    """mlxk's loader (fast BLAS, generation_config EOS ids), or ``load_fn`` when given."""
    from mlxk.engine.compat import check_mlx_lm

    check_mlx_lm()
    if load_fn is not None:
        model, tokenizer = load_fn(target.path)
        return LoadedModel(model, tokenizer, set(getattr(tokenizer, "eos_token_ids", None) or []))
    from mlxk.engine.loader import eos_token_ids
    from mlxk.engine.loader import load as mlxk_load

    loaded = mlxk_load(Path(target.path), trust_remote_code=trust_remote_code)
    return LoadedModel(loaded.model, loaded.tokenizer, eos_token_ids(loaded.tokenizer, loaded.generation_config))


def describe_failure(target: ModelTarget, exc: BaseException) -> str:
    """``Type: message`` with every absolute path of the model replaced by its display name."""
    detail = str(exc)
    paths = {str(target.path), target.key, str(Path(target.path).expanduser())}
    for p in sorted(paths, key=len, reverse=True):
        detail = detail.replace(p, target.name)
    return f"{type(exc).__name__}: {detail}"


def folder_signature(path: Path) -> tuple:
    """Names, sizes and mtimes of a model folder's top-level files: changes when it is repaired."""
    try:
        with os.scandir(path) as it:
            return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in it if e.is_file()))
    except OSError:
        return ()


class FailedLoads:
    """Loads that failed, by model key, valid while the folder's files stay the same."""

    def __init__(self):
        self._failed: dict[str, tuple[tuple, EngineError, str, str]] = {}

    def remember(self, target: ModelTarget, message: str) -> EngineError:
        err = EngineError(503, f"Model '{target.name}' failed to load: {message}", "server_error",
                          param="model", code="model_load_failed")
        self._failed[target.key] = (folder_signature(target.path), err, message, target.name)
        log.error("loading %s failed: %s", target.name, message)
        return err

    def known(self, target: ModelTarget) -> EngineError | None:
        entry = self._failed.get(target.key)
        if entry is None:
            return None
        if entry[0] != folder_signature(target.path):
            del self._failed[target.key]
            return None
        return entry[1]

    def forget(self, target: ModelTarget) -> None:
        self._failed.pop(target.key, None)

    def report(self) -> dict[str, str]:
        """{display name: reason} for /health."""
        return {name: msg for _, _, msg, name in self._failed.values()}
