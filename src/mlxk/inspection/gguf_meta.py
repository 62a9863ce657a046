"""Read the metadata header of a GGUF file without loading tensors (or importing mlx).

Arrays (the tokenizer's vocabulary, merges) are skipped and reported by length only,
unless their key is asked for in ``want_arrays``; that keeps ``list`` fast on a cache of
multi-GB GGUF files.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class GGUFError(ValueError):
    pass


def _read(fh: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    raw = fh.read(size)
    if len(raw) != size:
        raise GGUFError("truncated GGUF header")
    return struct.unpack(fmt, raw)[0]


def _string(fh: BinaryIO) -> str:
    n = _read(fh, "<Q")
    if n > 1 << 30:
        raise GGUFError("implausible string length in GGUF header")
    return fh.read(n).decode("utf-8", errors="replace")


def _value(fh: BinaryIO, vtype: int, keep: bool) -> Any:
    if vtype in _SCALARS:
        return _read(fh, _SCALARS[vtype])
    if vtype == _STRING:
        return _string(fh)
    if vtype == _ARRAY:
        itype, count = _read(fh, "<I"), _read(fh, "<Q")
        if keep:
            return [_value(fh, itype, True) for _ in range(count)]
        if itype in _SCALARS:
            fh.seek(struct.calcsize(_SCALARS[itype]) * count, 1)
        else:
            for _ in range(count):
                _value(fh, itype, False)
        return {"array_length": count}
    raise GGUFError(f"unknown GGUF value type {vtype}")


def read_metadata(path: Path, want_arrays: tuple[str, ...] = ()) -> dict[str, Any]:
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise GGUFError(f"{path.name} is not a GGUF file")
        version = _read(fh, "<I")
        if version < 2:
            raise GGUFError(f"GGUF version {version} is not supported")
        _read(fh, "<Q")  # tensor count
        kv_count = _read(fh, "<Q")
        meta: dict[str, Any] = {"GGUF.version": version}
        for _ in range(kv_count):
            key = _string(fh)
            vtype = _read(fh, "<I")
            meta[key] = _value(fh, vtype, key in want_arrays)
        return meta
