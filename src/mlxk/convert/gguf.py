"""GGUF → MLX model folder (what ``mlx_lm.load`` reads).

Two readers, one writer. When every tensor is F32/F16/Q4_0/Q4_1/Q8_0, ``mx.load`` reads
the file natively and hands Q4_0/Q4_1/Q8_0 back as MLX affine triples (group size 32), so
their quantization can be kept without loss. Anything else (llama.cpp's default Q4_K_M
mixes Q4_K, Q5_0, Q6_K…) is read with gguf-py: a memory-mapped ``GGUFReader`` and
``gguf.quants.dequantize``, tensor by tensor. Either way each tensor is renamed and fixed
for its architecture (``gguf_arch``), cast (and, with ``quantize_bits``, re-quantized to
MLX affine with ``mx.quantize``) and handed to a ``ShardWriter``, which never holds more
than one shard: peak memory is about one f32 tensor plus one shard, not the model.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from mlxk.convert.gguf_arch import (
    ArchSpec,
    UnsupportedGGUF,
    hf_name,
    model_config,
    permute_heads,
    shifts_norm,
    spec_for,
    unpermute,
)
from mlxk.convert.gguf_tokenizer import build_tokenizer_json, dumps, tokenizer_config
from mlxk.convert.shards import DEFAULT_SHARD_BYTES, ShardWriter

__all__ = ["UnsupportedGGUF", "ImportResult", "GGUFFile", "import_gguf", "MLX_NATIVE_TYPES"]

# Tensor types mx.load reads itself (the fast path); everything else goes through gguf-py.
MLX_NATIVE_TYPES = frozenset({"F32", "F16", "Q4_0", "Q4_1", "Q8_0"})
REQUANT_GROUP = 64  # mlx_lm's affine default


@dataclass(frozen=True)
class ImportResult:
    dtype: str  # "float32", "float16", "bfloat16", or "q4"/"q8"… when the weights are quantized
    quantization: dict[str, Any] | None
    architecture: str
    parameters: int
    tensor_types: dict[str, int]
    peak_held_bytes: int = 0  # the most the shard writer held at once (one shard + one tensor, by design)


class GGUFFile:
    """A GGUF opened with gguf-py (memory-mapped: opening reads only the header)."""

    def __init__(self, path: Path):
        from gguf import GGUFReader

        self.path = path
        try:
            self.reader = GGUFReader(str(path))
        except Exception as exc:  # gguf-py raises ValueError/struct.error/OSError on bad files
            raise UnsupportedGGUF(f"cannot read {path.name} as GGUF: {exc}") from exc

    @property
    def tensor_types(self) -> dict[str, int]:
        return dict(Counter(t.tensor_type.name for t in self.reader.tensors))

    @property
    def mlx_native(self) -> bool:
        return set(self.tensor_types) <= MLX_NATIVE_TYPES

    def metadata(self) -> dict[str, Any]:
        """The key/value section as plain Python values (str/int/float/bool/list), mx.load's keys."""
        meta: dict[str, Any] = {}
        for key, fld in self.reader.fields.items():
            if key.startswith("GGUF."):
                continue  # the reader's own header fields, not metadata
            meta[key] = fld.contents()
        return meta

    def arrays(self) -> Iterator[tuple[str, Any]]:
        """(name, float32 numpy array in row-major logical shape), one tensor at a time."""
        from gguf.quants import dequantize

        for t in self.reader.tensors:
            try:
                yield t.name, dequantize(t.data, t.tensor_type)
            except NotImplementedError as exc:
                raise UnsupportedGGUF(f"tensor '{t.name}' has type {t.tensor_type.name}, "
                                      "which gguf-py cannot dequantize") from exc


def _mlx_tensors(path: Path, keep: bool) -> Iterator[tuple[str, Any, tuple | None]]:
    """The fast path: mx.load; yields (name, array, (scales, biases) or None)."""
    import mlx.core as mx

    try:
        weights = mx.load(str(path))
    except Exception as exc:  # mlx raises RuntimeError/ValueError for bad or unsupported files
        raise UnsupportedGGUF(f"cannot read {path.name} as GGUF: {exc}") from exc
    for name in [n for n in weights if not n.endswith((".scales", ".biases"))]:
        stem = name.rsplit(".", 1)[0]
        w = weights.pop(name)
        scales, biases = weights.pop(f"{stem}.scales", None), weights.pop(f"{stem}.biases", None)
        if scales is not None:
            bits = w.shape[-1] * 32 // (scales.shape[-1] * 32)
            if keep:
                yield name, w, (scales, biases, int(bits))
                continue
            w = mx.dequantize(w, scales, biases, group_size=32, bits=int(bits))
        yield name, w, None


class _Emitter:
    """Per tensor: name, architecture fixes, dtype, optional re-quantization, into the writer."""

    def __init__(self, spec: ArchSpec, meta: dict[str, Any], arch: str, dtype: str, bits: int | None,
                 writer: ShardWriter):
        import mlx.core as mx

        self.spec, self.writer, self.bits = spec, writer, bits
        self.heads = int(meta[f"{arch}.attention.head_count"])
        self.kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", self.heads))
        self.dtype = getattr(mx, dtype)
        self.quant: dict[str, dict[str, int]] = {}
        self.params = 0
        self.names: set[str] = set()

    def _target(self, name: str) -> str:
        hf = hf_name(self.spec, name)
        if hf is None:
            raise UnsupportedGGUF(f"unexpected tensor '{name}' for architecture '{self.spec.model_type}'")
        self.names.add(hf)
        return hf

    def kept(self, name: str, w: Any, triple: tuple) -> None:
        scales, biases, bits = triple
        hf = self._target(name)
        n = self.permute(name)
        if n:
            w, scales, biases = (unpermute(t, n) for t in (w, scales, biases))
        module = hf.rsplit(".", 1)[0]
        self.params += w.shape[0] * scales.shape[-1] * 32
        for suffix, t in (("weight", w), ("scales", scales), ("biases", biases)):
            self.writer.add(f"{module}.{suffix}", t)
        self.quant[module] = {"group_size": 32, "bits": bits}

    def permute(self, name: str) -> int | None:
        return permute_heads(self.spec, name, self.heads, self.kv_heads)

    def float(self, name: str, w: Any) -> None:
        import mlx.core as mx

        hf = self._target(name)
        n = self.permute(name)
        if n:
            w = unpermute(w, n)
        w = mx.array(w) if not isinstance(w, mx.array) else w
        if shifts_norm(self.spec, name):
            w = w.astype(mx.float32) - 1.0
        self.params += w.size
        if self.bits and hf.endswith(".weight") and w.ndim == 2 and w.shape[-1] % REQUANT_GROUP == 0:
            q, scales, biases = mx.quantize(w.astype(mx.float32), group_size=REQUANT_GROUP, bits=self.bits)
            module = hf.rsplit(".", 1)[0]
            self.writer.add(f"{module}.weight", q)
            self.writer.add(f"{module}.scales", scales.astype(self.dtype))
            self.writer.add(f"{module}.biases", biases.astype(self.dtype))
            self.quant[module] = {"group_size": REQUANT_GROUP, "bits": self.bits}
            return
        self.writer.add(hf, w.astype(self.dtype) if mx.issubdtype(w.dtype, mx.floating) else w)

    def quantization(self) -> dict[str, Any] | None:
        if not self.quant:
            return None
        if self.bits:
            return {"group_size": REQUANT_GROUP, "bits": self.bits, "mode": "affine"}
        common = Counter(q["bits"] for q in self.quant.values()).most_common(1)[0][0]
        q: dict[str, Any] = {"group_size": 32, "bits": common}
        q.update({m: v for m, v in self.quant.items() if v["bits"] != common})
        return q


def import_gguf(
    path: Path,
    target: Path,
    dtype: str = "float32",
    keep_quantized: bool = False,
    progress: Callable[[int, int], None] | None = None,
    quantize_bits: int | None = None,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    gguf: GGUFFile | None = None,
) -> ImportResult:
    """Write an MLX model folder for ``path`` into ``target`` (which must exist and be empty)."""
    gguf = gguf or GGUFFile(path)
    meta = gguf.metadata()
    arch = str(meta.get("general.architecture", "unknown"))
    spec = spec_for(arch)
    types = gguf.tensor_types
    if keep_quantized and not gguf.mlx_native:
        others = sorted(set(types) - MLX_NATIVE_TYPES)
        raise UnsupportedGGUF(f"its {', '.join(others)} tensors cannot be kept as they are "
                              "(use --quantize 4|8 to re-quantize, or none)")
    try:
        tok_json, specials = build_tokenizer_json(meta)
    except (ValueError, KeyError) as exc:
        raise UnsupportedGGUF(f"cannot rebuild the tokenizer: {exc}") from exc

    writer = ShardWriter(target, max_shard_bytes)
    emit = _Emitter(spec, meta, arch, dtype, quantize_bits, writer)
    total = len(gguf.reader.tensors)
    if gguf.mlx_native:
        stream: Iterator[tuple[str, Any, Any]] = _mlx_tensors(path, keep_quantized)
    else:
        stream = ((name, arr, None) for name, arr in gguf.arrays())
    for i, (name, w, triple) in enumerate(stream):
        if triple is not None:
            emit.kept(name, w, triple)
        else:
            emit.float(name, w)
        del w
        if progress:
            progress(i + 1, total)
    writer.finish(total_parameters=emit.params)

    config = model_config(meta, arch, tied="lm_head.weight" not in emit.names)
    quantization = emit.quantization()
    if quantization:
        config["quantization"] = config["quantization_config"] = quantization
    (target / "config.json").write_text(json.dumps(config, indent=2))
    (target / "tokenizer.json").write_text(dumps(tok_json), encoding="utf-8")
    (target / "tokenizer_config.json").write_text(dumps(tokenizer_config(meta, specials)), encoding="utf-8")
    gen = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config}
    (target / "generation_config.json").write_text(json.dumps(gen, indent=2))
    label = "q%d" % quantization["bits"] if quantization else dtype
    return ImportResult(label, quantization, arch, emit.params, types, writer.peak_held_bytes)
