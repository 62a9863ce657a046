"""When a CPU speed-up may run: its switch, and the mlx versions it was verified with.

Every piece of mlxk.accel reaches into MLX's CPU backend from outside (the BLAS symbols it
binds, the compiler command of its JIT kernels, functions of ``mlx.core``). A new mlx can
change any of that without notice, so each piece names the mlx versions it was checked
against and stays off with any other, saying why (``mlxk doctor``). The version is read
from the installed distribution's metadata folder, without importing mlx (``--version``
must stay fast).

``MLXK_ACCEL_MLX_VERSION=X`` makes the gate see mlx X (to try the gate without installing
another mlx); ``MLXK_ACCEL_UNVERIFIED=on`` runs the pieces with an unverified mlx anyway.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

OFF_WORDS = ("off", "0", "no", "false", "none")
ON_WORDS = ("on", "1", "yes", "true", "all")


def switched_off(name: str) -> bool:
    """An MLXK_* switch set to off (also 0, no, false, none)."""
    return os.environ.get(name, "").strip().lower() in OFF_WORDS


def switched_on(name: str) -> bool:
    """An MLXK_* switch set to on (also 1, yes, true, all)."""
    return os.environ.get(name, "").strip().lower() in ON_WORDS


def env_int(name: str) -> int:
    """A positive integer setting, or 0 (the default) for unset or unreadable values."""
    try:
        return max(0, int(os.environ.get(name, "") or 0))
    except ValueError:
        return 0


@functools.lru_cache(maxsize=1)
def _installed_mlx() -> str | None:
    for entry in sys.path:
        folder = Path(entry or ".")
        if folder.is_dir():
            for info in folder.glob("mlx-*.dist-info"):
                return info.name[len("mlx-"):-len(".dist-info")]
    return None


def mlx_version() -> str | None:
    """The mlx the gate compares: the installed one, or MLXK_ACCEL_MLX_VERSION when set."""
    return os.environ.get("MLXK_ACCEL_MLX_VERSION", "").strip() or _installed_mlx()


def unverified(verified: tuple[str, ...]) -> str | None:
    """Why a piece verified with these mlx versions must stay off here; None when it may run."""
    version = mlx_version()
    if version is None:
        return "mlx is not installed"
    if version in verified or switched_on("MLXK_ACCEL_UNVERIFIED"):
        return None
    return (f"not verified with mlx {version} (verified: {', '.join(verified)}; "
            "MLXK_ACCEL_UNVERIFIED=on runs it anyway)")
