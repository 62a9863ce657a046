"""``doctor``: what the runtime looks like here (device, BLAS, versions, memory)."""

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
    from mlxk.engine import blas, cpu_kernels

    info = blas.setup()
    kernels = cpu_kernels.describe()
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
    data = {
        "mlxk_version": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "mlx_version": _version("mlx"),
        "mlx_lm_version": _version("mlx-lm"),
        "device": device,
        "backends": backends,
        "blas": {"name": info.name, "path": info.path, "note": info.note or None, "decode_gemm": info.decode_gemm},
        "cpu_kernels": {"flags": list(kernels.flags), "note": kernels.note or None},
        "memory_total_bytes": memory_total_bytes(),
        "memory_available_bytes": memory_available_bytes(),
        "problems": [p for p in (problem,) if p] + ([info.note] if info.name.startswith("bundled") else []),
    }
    return Envelope.success("doctor", data)
