"""The mlx-lm API the serving engine drives, checked before the first request.

The engine uses mlx-lm's batch internals (``BatchGenerator.insert_segments`` with per-
sequence ``stop_sequences``, ``extract_cache``, ``StopSequences``), which move between
releases. pyproject.toml declares the range verified here; at start the engine checks the
installed mlx-lm has what it calls and fails with a message naming both versions, instead
of failing later inside a request (or leaving /health at "loading").
"""

from __future__ import annotations

import inspect
from importlib import metadata

VERIFIED = ">=0.32.2,<0.33"  # keep in step with pyproject.toml
NEEDED_PARAMS = ("segments", "max_tokens", "caches", "all_tokens", "samplers", "logits_processors",
                 "stop_sequences")


class IncompatibleMlxLm(RuntimeError):
    pass


def installed_version() -> str:
    try:
        return metadata.version("mlx-lm")
    except metadata.PackageNotFoundError:
        return "not installed"


def check_mlx_lm(generator_cls=None) -> None:
    """Raise IncompatibleMlxLm naming the installed and the required versions.

    ``generator_cls`` checks another class than mlx-lm's BatchGenerator (tests)."""
    version = installed_version()
    required = f"mlx-lm{VERIFIED}"
    try:
        from mlx_lm.generate import BatchGenerator, StopSequences  # noqa: F401
    except ImportError as exc:
        raise IncompatibleMlxLm(f"mlx-lm {version} is installed, mlxk serve needs {required} "
                                f"(missing: {exc.name or exc})") from exc
    if generator_cls is not None:
        BatchGenerator = generator_cls  # noqa: N806
    missing = [name for name in ("insert_segments", "extract_cache", "remove", "next")
               if not callable(getattr(BatchGenerator, name, None))]
    if not missing:
        params = inspect.signature(BatchGenerator.insert_segments).parameters
        missing = [f"insert_segments({p}=)" for p in NEEDED_PARAMS if p not in params]
    if missing:
        raise IncompatibleMlxLm(f"mlx-lm {version} is installed, mlxk serve needs {required} "
                                f"(BatchGenerator lacks {', '.join(missing)})")
