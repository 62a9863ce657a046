"""``doctor``: what the runtime looks like here (device, versions, memory, and which of
mlxk's CPU speed-ups are in use, as observed in this process: mlxk.accel.report)."""

from __future__ import annotations

import platform
from importlib import metadata

from mlxk import __version__
from mlxk.contract import Envelope
from mlxk.ops.system import memory_available_bytes, memory_total_bytes


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def doctor() -> Envelope:
    from mlxk import accel
    from mlxk.accel import report

    accel.bootstrap()
    device, backends, problem = None, {}, None
    try:
        import mlx.core as mx

        device = str(mx.default_device())
        backends = {"metal": bool(mx.metal.is_available()),
                    "cuda": bool(getattr(getattr(mx, "cuda", None), "is_available", lambda: False)())}
        # a real matmul proves the backend works
        a = mx.ones((64, 64))
        mx.eval(a @ a)
    except Exception as exc:  # report, don't crash: this is the diagnostic command
        problem = f"{type(exc).__name__}: {exc}"
    observed = report.observe(probe=problem is None)
    data = {
        "mlxk_version": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "mlx_version": _version("mlx"),
        "mlx_lm_version": _version("mlx-lm"),
        "device": device,
        "backends": backends,
        "accel": observed.as_json(),
        "memory_total_bytes": memory_total_bytes(),
        "memory_available_bytes": memory_available_bytes(),
        "problems": [p for p in (problem,) if p] + observed.problems(),
    }
    return Envelope.success("doctor", data)
