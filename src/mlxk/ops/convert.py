"""``convert``: GGUF import, mlx_lm quantization, index repair. Output is always atomic.

The result is built in a hidden sibling folder and renamed into place only once it is
complete and checked; any failure removes the staging folder, so a failed convert leaves
nothing behind.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any, Callable, Iterator

from mlxk.contract import Envelope, MlxkError
from mlxk.inspection.model_object import inspect
from mlxk.store.names import ModelRef, is_path_spec, resolve, validate_name

MODEL_CARD = """---
library_name: mlx
tags:
- mlx
{extra}---
# {name}

Converted with mlxk from `{source}` ({how}).
"""

Progress = Callable[[int, int], None]
BITS = ("2", "3", "4", "6", "8")


def backend_is_cpu() -> bool:
    import mlx.core as mx

    return mx.default_device() == mx.cpu or not (mx.metal.is_available() or _cuda_available(mx))


def _cuda_available(mx: Any) -> bool:
    cuda = getattr(mx, "cuda", None)
    return bool(cuda and getattr(cuda, "is_available", lambda: False)())


def choose_gguf_mode(dtype: str, quantize: str, mlx_native: bool = True) -> tuple[str, bool, int | None, str]:
    """(float dtype, keep GGUF quantization?, re-quantize to bits, why) — auto picks what decodes fastest here.

    ``mlx_native``: every tensor is one mx.load reads itself (F32/F16/Q4_0/Q4_1/Q8_0), so its
    quantization can be kept; K-quants and the like can only be dequantized (and re-quantized).
    """
    if quantize == "keep":
        if not mlx_native:
            raise MlxkError("ValidationError", "This GGUF has K-quant (or other non-MLX) tensors, which cannot be "
                            "kept as they are: use --quantize 4|8 to re-quantize, or --quantize none")
        return ("float16", True, None, "kept the GGUF quantization (--quantize keep)")
    if quantize in BITS:
        # the scales' dtype: MLX's CPU quantized matmul is ~40x slower with float16 scales than float32
        chosen = ("float32" if backend_is_cpu() else "float16") if dtype == "auto" else dtype
        return (chosen, False, int(quantize), f"dequantized, then quantized to {quantize}-bit (MLX affine, {chosen} scales)")
    if quantize == "none" or dtype != "auto":
        chosen = "float32" if dtype == "auto" else dtype
        return (chosen, False, None, f"dequantized to {chosen}")
    if backend_is_cpu():
        return ("float32", False, None, "auto: dequantized to float32, the fastest on the CPU backend")
    if not mlx_native:
        return ("float16", False, 4, "auto: dequantized and re-quantized to 4-bit, the fastest on Metal/CUDA")
    return ("float16", True, None, "auto: kept 4-bit weights, the fastest on Metal/CUDA")


@contextmanager
def staging_for(target: Path) -> Iterator[Path]:
    """A hidden sibling folder that becomes ``target`` on success and vanishes on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        yield tmp
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_target(target: Path) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise MlxkError("ValidationError", f"Target '{target}' already exists and is not empty")
    if target.is_dir():
        target.rmdir()  # empty: the staged result replaces it


def _health(path: Path, name: str) -> dict[str, Any]:
    item = inspect(ModelRef(name=name, path=path, cached=False))
    return {
        "health_check": True,
        "health_status": "healthy" if item.healthy else "unhealthy",
        "health_reason": item.health_reason or "Model is healthy",
        "runtime_compatible": item.runtime_compatible,
    }


def _write_card(folder: Path, name: str, source: str, how: str, extra: str = "") -> None:
    (folder / "README.md").write_text(MODEL_CARD.format(name=name, source=source, how=how, extra=extra))


def convert_gguf(
    source: str, target: Path | None, dtype: str, quantize: str, into_cache: str | None, progress: Progress | None
) -> Envelope:
    from mlxk.convert.gguf import GGUFFile, UnsupportedGGUF, import_gguf

    src = Path(source).expanduser()
    if not src.is_file():
        raise MlxkError("model_not_found", f"GGUF file '{source}' does not exist")
    try:
        gguf = GGUFFile(src)
    except UnsupportedGGUF as exc:
        raise MlxkError("ValidationError", f"Cannot import {src.name}: {exc}") from exc
    float_dtype, keep, bits, why = choose_gguf_mode(dtype, quantize, gguf.mlx_native)
    staged_parent = target if target is not None else Path(tempfile.mkdtemp(prefix="mlxk-import-"))
    out = staged_parent if target is not None else staged_parent / "model"
    if target is not None:
        _check_target(target)
    try:
        with staging_for(out) as tmp:
            try:
                result = import_gguf(src, tmp, dtype=float_dtype, keep_quantized=keep, progress=progress,
                                     quantize_bits=bits, gguf=gguf)
            except UnsupportedGGUF as exc:
                raise MlxkError("ValidationError", f"Cannot import {src.name}: {exc}") from exc
            _write_card(tmp, into_cache or out.name, src.name, why, extra="- gguf-import\n")
            health = _health(tmp, str(target or out))
            if health["health_status"] != "healthy":
                raise MlxkError("OperationError", f"Converted model failed its health check: {health['health_reason']}")
        data: dict[str, Any] = {
            "source": source,
            "target": str(target) if target is not None else into_cache,
            "mode": "quantize",
            "source_format": "gguf",
            "architecture": result.architecture,
            "parameters": result.parameters,
            "dtype": result.dtype,
            "dtype_reason": why,
            "quantization": result.quantization if quantize != "none" else None,
            "tensor_types": result.tensor_types,
            **health,
        }
        if into_cache:
            data.update(_into_cache(out, into_cache, move=target is None))
        data["message"] = f"Imported {src.name} ({why})" + (f" into the cache as {into_cache}" if into_cache else "")
        return Envelope.success("convert", data)
    finally:
        if target is None:
            shutil.rmtree(staged_parent, ignore_errors=True)


def _into_cache(folder: Path, repo_id: str, move: bool) -> dict[str, Any]:
    from mlxk.store.register import register_folder

    commit = register_folder(folder, repo_id, move=move)
    return {"cached_as": repo_id, "hash": commit}


def convert_mlx(spec: str, target: Path | None, bits: int, into_cache: str | None) -> Envelope:
    """An HF/MLX model (cache or workspace) → quantized MLX folder, through mlx_lm.convert."""
    ref = resolve(spec)
    item = inspect(ref)
    if not item.healthy:
        raise MlxkError("unhealthy", f"Source {ref.name} is unhealthy: {item.health_reason}")
    if target is None and not into_cache:
        raise MlxkError("ValidationError", "Give a target folder or --into-cache NAME")
    from mlx_lm import convert as mlx_convert

    tmp_root = Path(tempfile.mkdtemp(prefix="mlxk-convert-"))
    out = target if target is not None else tmp_root / "model"
    if target is not None:
        _check_target(target)
    try:
        with staging_for(out) as tmp:
            tmp.rmdir()  # mlx_lm.convert insists on creating the folder itself
            try:
                # mlx_lm.convert prints its progress on stdout, where --json owes one envelope only
                with redirect_stdout(sys.stderr):
                    mlx_convert(hf_path=str(ref.path), mlx_path=str(tmp), quantize=True, q_bits=bits)
            finally:
                tmp.mkdir(exist_ok=True)
            _write_card(tmp, into_cache or out.name, ref.name, f"{bits}-bit with mlx_lm.convert")
            health = _health(tmp, str(out))
        data = {
            "source": ref.name,
            "target": str(target) if target is not None else into_cache,
            "mode": "quantize",
            "source_format": "safetensors",
            "bits": bits,
            "group_size": 64,
            **health,
            "message": f"Quantized {ref.name} to {bits}-bit",
        }
        if into_cache:
            data.update(_into_cache(out, into_cache, move=target is None))
        return Envelope.success("convert", data)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)


def repair_index(spec: str) -> Envelope:
    """Rebuild model.safetensors.index.json from the shards' own headers (workspaces only)."""
    if not is_path_spec(spec):
        raise MlxkError("ValidationError", "--repair-index works on a workspace path (the cache is read-only)")
    ref = resolve(spec)
    shards = sorted(p for p in ref.path.glob("*.safetensors"))
    if not shards:
        raise MlxkError("ValidationError", f"No safetensors shards in '{spec}'")
    weight_map: dict[str, str] = {}
    total = 0
    for shard in shards:
        header = _safetensors_header(shard)
        for name, info in header.items():
            if name == "__metadata__":
                continue
            weight_map[name] = shard.name
            start, end = info["data_offsets"]
            total += end - start
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    dest = ref.path / "model.safetensors.index.json"
    tmp = dest.with_name(dest.name + ".mlxk-tmp")
    tmp.write_text(json.dumps(index, indent=2))
    tmp.replace(dest)
    health = _health(ref.path, spec)
    return Envelope.success(
        "convert",
        {"source": spec, "target": spec, "mode": "repair-index", "shards": len(shards), "tensors": len(weight_map),
         **health, "message": f"Rebuilt model.safetensors.index.json from {len(shards)} shard(s)"},
    )


def _safetensors_header(path: Path) -> dict[str, Any]:
    import struct

    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise MlxkError("OperationError", f"{path.name} is not a safetensors file")
        (size,) = struct.unpack("<Q", raw)
        if size > 100 * 2**20:
            raise MlxkError("OperationError", f"{path.name} has an implausible header")
        try:
            return json.loads(fh.read(size))
        except ValueError as exc:
            raise MlxkError("OperationError", f"{path.name} has a corrupt header") from exc


def convert(
    source: str,
    target: str | None,
    dtype: str = "auto",
    quantize: str = "auto",
    repair: bool = False,
    into_cache: str | None = None,
    progress: Progress | None = None,
) -> Envelope:
    if into_cache:
        validate_name(into_cache)
        if "/" not in into_cache:
            raise MlxkError("ValidationError", f"--into-cache needs 'org/name', got '{into_cache}'")
    if repair:
        return repair_index(source)
    from mlxk import accel

    accel.bootstrap()  # every path below imports mlx
    tgt = Path(target).expanduser() if target else None
    if source.lower().endswith(".gguf"):
        return convert_gguf(source, tgt, dtype, "auto" if quantize == "auto" else quantize, into_cache, progress)
    if quantize not in BITS:
        raise MlxkError("ValidationError", "Converting a safetensors model needs --quantize 2, 3, 4, 6 or 8")
    return convert_mlx(source, tgt, int(quantize), into_cache)
