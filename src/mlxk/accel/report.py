"""What of mlxk.accel is in use in this process, as observed, not as planned.

Once mlx is loaded, each piece is checked where it takes effect: the libraries mapped into
the process (``/proc/self/maps``), the library that ``cblas_sgemm`` resolves to in the global
scope (where MLX looks it up) and the one the decode GEMM hands calls on to, the decode
GEMM's call counters (MLX called it, or it did not), the kernel libraries loaded from
mlxk's kernel folder (only mlxk's ``g++`` builds there), and whether ``mx.logsumexp`` /
``mx.fast.scaled_dot_product_attention`` are mlxk's functions right now. ``probe=True``
first makes MLX do a few-row matmul and build one fused kernel, so that a process that
has not run a model yet can still show them in use (``mlxk doctor``).

Where mlx is not loaded (``mlxk --version``), nothing can be observed: the report then
gives the plan, each piece's switch and version gate, and says so.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlxk.accel import blas, booted, cpu_kernels, decode_gemm, gate, ops_plan

NOT_LOADED = "planned; mlx is not loaded by this command: `mlxk doctor` shows what is in use"


@dataclass(frozen=True)
class Piece:
    name: str  # blas, decode_gemm, cpu_kernels, cpu_ops
    label: str  # as the human lines name it
    summary: str  # what it is here, e.g. "OpenBLAS (openblas-pthread/libblas.so.3)"
    on: bool | None  # observed in use; None when it cannot be seen (yet)
    reason: str  # why off or not seen, when that is worth saying
    verified_mlx: tuple[str, ...]
    observed: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        state = "" if self.on else f" - {'off: ' if self.on is False else ''}{self.reason}" if self.reason else ""
        return f"{self.label}: {self.summary}{state}"

    def as_json(self) -> dict[str, Any]:
        return {"on": self.on, "summary": self.summary, "reason": self.reason or None,
                "verified_mlx": list(self.verified_mlx), "observed": self.observed}


@dataclass(frozen=True)
class Report:
    mlx_version: str | None  # as the version gate sees it
    mlx_loaded: bool
    pieces: tuple[Piece, ...]

    def lines(self) -> list[str]:
        return [p.line() for p in self.pieces] + ([] if self.mlx_loaded else [f"({NOT_LOADED})"])

    def as_json(self) -> dict[str, Any]:
        return {"mlx_version": self.mlx_version, "mlx_loaded": self.mlx_loaded,
                **{p.name: p.as_json() for p in self.pieces}}

    def problems(self) -> list[str]:
        """Pieces kept off by the version gate or a missing library: worth a `!` in doctor."""
        return [f"{p.label}: {p.reason}" for p in self.pieces
                if p.on is False and ("not verified" in p.reason or "install" in p.reason)]


# --- what the process has mapped ------------------------------------------------------

def _mappings() -> list[tuple[int, int, str]]:
    try:
        text = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    out = []
    for row in text.splitlines():
        parts = row.split(maxsplit=5)
        if len(parts) == 6 and parts[5].startswith("/"):
            lo, hi = parts[0].split("-")
            out.append((int(lo, 16), int(hi, 16), parts[5]))
    return out


def _library_at(address: int | None, maps: list[tuple[int, int, str]]) -> str | None:
    return next((path for lo, hi, path in maps if address is not None and lo <= address < hi), None)


def short(path: str | None) -> str | None:
    """A library named by its folder and file (no absolute paths in JSON)."""
    return None if path is None else "/".join(Path(path).parts[-2:])


def _is_blas(path: str) -> bool:
    name = Path(path).name
    return name.startswith(("libblas", "libopenblas")) or "_skinny_gemm" in name


# --- the pieces -----------------------------------------------------------------------

def _blas(maps, loaded: bool) -> Piece:
    info = blas.info() or blas.plan()
    summary = info.name + (f" ({short(info.path)})" if info.path else "")
    if not loaded or info.name == "Accelerate":
        return Piece("blas", "BLAS", summary, None if info.path else False, info.note, blas.VERIFIED_MLX)
    first = _library_at(blas.sgemm_address(), maps)
    behind = _library_at(decode_gemm.forward_address(), maps) if decode_gemm.counts() is not None else None
    used = behind or first or next((p for *_, p in maps if Path(p).name.startswith("libblas-")), None)
    observed = {"mapped": sorted({short(p) for *_, p in maps if _is_blas(p)}),
                "sgemm_resolves_to": short(first), "decode_gemm_hands_on_to": short(behind),
                "mlx_uses": short(used)}
    on = info.path is not None and used is not None and Path(used).resolve() == Path(info.path).resolve()
    reason = info.note or ("" if on else f"MLX uses {short(used)}")
    if not on and used and "mlx_cpu.libs" in used:
        summary = f"{blas.BUNDLED} ({short(used)})"
    return Piece("blas", "BLAS", summary, on, reason, blas.VERIFIED_MLX, observed)


def _decode_gemm(loaded: bool) -> Piece:
    what, verified = "mlxk's few-row cblas_sgemm", decode_gemm.VERIFIED_MLX
    info = decode_gemm.info()
    if info is None:  # not attached in this process
        why = decode_gemm.why_not()
        if why is None and (blas.info() or blas.plan()).path is None:
            why = "it sits in front of OpenBLAS only"
        if why is None and not loaded:
            return Piece("decode_gemm", "decode GEMM", what, None, "", verified)  # the plan
        return Piece("decode_gemm", "decode GEMM", what, False, why or "not set up in this process", verified)
    counts, threads = decode_gemm.counts(), decode_gemm.threads()
    if counts is None or threads is None:
        return Piece("decode_gemm", "decode GEMM", what, False, info.note, verified)
    observed = {"calls_taken": counts[0], "calls_handed_on": counts[1], "threads": threads}
    called = counts[0] + counts[1] > 0
    summary = f"{what}, {counts[0]} calls taken, {counts[1]} handed on, {threads['now']} of {threads['most']} threads"
    return Piece("decode_gemm", "decode GEMM", summary, True if called else None,
                 "" if called else "in front of the BLAS, not called yet", verified, observed)


def _cpu_kernels(maps, loaded: bool) -> Piece:
    info = cpu_kernels.info() or cpu_kernels.plan()
    if not info.flags:
        return Piece("cpu_kernels", "CPU kernels", "MLX defaults", False, info.note, cpu_kernels.VERIFIED_MLX)
    summary = "g++ " + " ".join(info.flags)
    if not loaded or cpu_kernels.info() is None:
        return Piece("cpu_kernels", "CPU kernels", summary, None, "", cpu_kernels.VERIFIED_MLX)
    folder = str(cpu_kernels.kernel_dir() / "tmp") + "/"
    mapped = sorted({p for *_, p in maps if p.startswith(folder) and p.endswith(".so")})
    observed = {"loaded_from_mlxk_folder": len(mapped), "built_in_mlxk_folder": len(cpu_kernels.built_kernels())}
    if mapped:
        return Piece("cpu_kernels", "CPU kernels", f"{summary}, {len(mapped)} built by mlxk's g++ loaded",
                     True, "", cpu_kernels.VERIFIED_MLX, observed)
    return Piece("cpu_kernels", "CPU kernels", summary, None, "no fused kernel loaded in this process yet",
                 cpu_kernels.VERIFIED_MLX, observed)


def _cpu_ops(loaded: bool) -> Piece:
    boot = booted()
    kernels = cpu_kernels.info() or cpu_kernels.plan()
    ops, why = (boot.ops, boot.ops_note) if boot is not None else ops_plan.plan(bool(kernels.flags))
    if not loaded or boot is None:
        return Piece("cpu_ops", "mx ops", _ops_summary(ops), None if ops else False, why, ops_plan.VERIFIED_MLX)
    replaced: list[str] = []
    if "mlxk.accel.cpu_ops" in sys.modules:
        from mlxk.accel import cpu_ops

        replaced = cpu_ops.replaced()
    observed = {"replaced": replaced}
    summary = ", ".join(replaced) + " replaced" if replaced else "MLX's own"
    return Piece("cpu_ops", "mx ops", summary, bool(replaced), why, ops_plan.VERIFIED_MLX, observed)


def _ops_summary(ops: tuple[str, ...]) -> str:
    names = {"logsumexp": "mx.logsumexp", "attention": "mx.fast.scaled_dot_product_attention"}
    return ", ".join(names[o] for o in ops) + " replaced" if ops else "MLX's own"


def _probe() -> None:
    """Make MLX call the BLAS with a few-row product and build one fused kernel."""
    import mlx.core as mx

    x, w = mx.ones((2, 64)), mx.ones((96, 64))
    mx.eval(x @ w.T, mx.compile(lambda v: mx.sigmoid(v) * v)(mx.linspace(-4, 4, 33)))


def observe(probe: bool = False) -> Report:
    """The report for this process. probe=True imports mlx (after the bootstrap) and uses it."""
    if probe:
        _probe()
    loaded = "mlx.core" in sys.modules
    maps = _mappings() if loaded else []
    pieces = (_blas(maps, loaded), _decode_gemm(loaded), _cpu_kernels(maps, loaded), _cpu_ops(loaded))
    return Report(gate.mlx_version(), loaded, pieces)
