"""Let MLX build its fused CPU kernels for the CPU it runs on.

``mx.compile`` turns fused elementwise work (mlx-lm's SwiGLU, the samplers' masks) into
C++ that MLX builds with ``g++ -O3`` at first use and keeps under
``$TMPDIR/mlx/<version>/cpu``. The Linux wheels are built for baseline x86-64, so that
command has no ``-mavx2 -mfma`` (MLX adds them only when it is itself built for AVX2):
every fmaf in MLX's exp becomes a call into libm and little is vectorized. On a CPU with
AVX2, FMA and F16C we put a ``g++`` first on PATH that adds those flags, and give MLX a
kernel folder of mlxk's own (TMPDIR), named for the flags, so kernels built with and
without them never mix and a home shared between machines never hands one to a CPU that
lacks them. That is about a tenth of a decode step at 16 sequences on a 2-vCPU EPYC.
``MLXK_CPU_KERNELS=off`` leaves MLX as it is. :func:`mlxk.accel.bootstrap` calls
:func:`setup` before mlx is imported.
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from mlxk.accel import gate
from mlxk.store.cache import mlxk_cache_dir

# MLX runs `g++` from PATH and keeps its kernels in $TMPDIR/mlx/<version>/cpu
VERIFIED_MLX = ("0.32.4",)
FLAGS = ("-mavx2", "-mfma", "-mf16c")
CPU_FEATURES = ("avx2", "fma", "f16c")  # as /proc/cpuinfo names them


@dataclass(frozen=True)
class KernelInfo:
    flags: tuple[str, ...]  # what MLX's kernel builds get added; empty when left alone
    note: str  # why not, when it is worth saying

    def summary(self) -> str:
        if self.flags:
            return "g++ " + " ".join(self.flags)
        return "MLX defaults" + (f" - {self.note}" if self.note else "")

    def line(self) -> str:
        return f"CPU kernels: {self.summary()}"


_INFO: KernelInfo | None = None

# MLX runs `g++ ... "<dir>/X.cpp" -o "<dir>/libX.so"` and loads libX.so once it exists;
# building into a temporary name and renaming means no process ever loads half a library
WRAPPER = """#!/bin/sh
# written by mlxk: MLX's CPU kernel builds, with this CPU's flags, written atomically
n=$#; out=; prev=
for a do
  if [ "$prev" = "-o" ]; then out=$a; set -- "$@" "$a.$$.tmp"; else set -- "$@" "$a"; fi
  prev=$a
done
shift "$n"
{gxx} {flags} "$@" || {{ s=$?; [ -z "$out" ] || rm -f "$out.$$.tmp"; exit "$s"; }}
[ -z "$out" ] || exec mv -f "$out.$$.tmp" "$out"
"""


def _cpu_has(features: tuple[str, ...]) -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return all(f in flags for f in features)


def kernel_dir() -> Path:
    return mlxk_cache_dir() / "cpu-kernels" / "-".join(CPU_FEATURES)


def _real_gxx() -> str | None:
    """g++ on PATH, not counting our own wrapper."""
    wrappers = kernel_dir() / "bin"
    return shutil.which("g++", path=os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != wrappers))


NO_GXX = "no g++ on PATH (MLX runs fused ops without compiling them)"


def _why_not() -> str | None:
    if gate.switched_off("MLXK_CPU_KERNELS"):
        return "MLXK_CPU_KERNELS=off"
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return ""  # Metal, or a CPU whose wheels need no help: nothing to say
    if not _cpu_has(CPU_FEATURES):
        return "this CPU lacks AVX2/FMA/F16C"
    return gate.unverified(VERIFIED_MLX)


def setup() -> KernelInfo:
    """Point MLX's kernel builds at g++ with this CPU's flags. Idempotent."""
    global _INFO
    if _INFO is not None:
        return _INFO
    why = _why_not()
    if why is not None:
        _INFO = KernelInfo((), why)
        return _INFO
    real = _real_gxx()
    if real is None:
        _INFO = KernelInfo((), NO_GXX)
        return _INFO
    from mlxk.store.register import atomic_write

    folder = kernel_dir()
    wrappers = folder / "bin"
    script = WRAPPER.format(gxx=shlex.quote(real), flags=" ".join(FLAGS))
    try:
        (folder / "tmp").mkdir(parents=True, exist_ok=True)
        wrappers.mkdir(exist_ok=True)
        gxx = wrappers / "g++"
        if not gxx.is_file() or gxx.read_text() != script:
            atomic_write(gxx, script)
        gxx.chmod(0o755)
    except OSError as exc:
        _INFO = KernelInfo((), f"cannot write {folder}: {exc.strerror or exc}")
        return _INFO
    os.environ["PATH"] = f"{wrappers}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ["TMPDIR"] = str(folder / "tmp")  # MLX keeps its kernels in $TMPDIR/mlx/<version>/cpu
    _INFO = KernelInfo(FLAGS, "")
    return _INFO


def info() -> KernelInfo | None:
    """What setup() did in this process; None when it was not asked."""
    return _INFO


def built_kernels() -> list[Path]:
    """The kernel libraries MLX has built in mlxk's folder (by any process, any mlx version)."""
    return sorted((kernel_dir() / "tmp").glob("mlx/*/cpu/lib*.so"))


def plan() -> KernelInfo:
    """What setup() does, without doing it (for --version)."""
    if _INFO is not None:
        return _INFO
    why = _why_not()
    if why is not None:
        return KernelInfo((), why)
    return KernelInfo(FLAGS, "") if _real_gxx() else KernelInfo((), NO_GXX)
