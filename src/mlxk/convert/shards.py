"""Write safetensors shards one tensor at a time, the way mlx_lm lays them out.

A model is never held whole: tensors are added as they are made and a shard is written
(and forgotten) as soon as it reaches ``max_shard_bytes``, so what the writer holds is at
most one shard plus the tensor that closed it. ``peak_held_bytes`` records that, so a
test can check the bound by design rather than by timing. Names and the index follow
mlx_lm's ``save_model``: ``model.safetensors`` for one shard, else
``model-0000N-of-0000M.safetensors``, plus ``model.safetensors.index.json`` in both cases.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DEFAULT_SHARD_BYTES = 2 * 2**30


class ShardWriter:
    def __init__(self, folder: Path, max_shard_bytes: int = DEFAULT_SHARD_BYTES):
        self.folder = folder
        self.max_shard_bytes = max_shard_bytes
        self._pending: dict[str, Any] = {}
        self._pending_bytes = 0
        self._written: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0
        self.peak_held_bytes = 0

    def add(self, name: str, array: Any) -> None:
        """Take one mlx array; write the shard out once it is full."""
        import mlx.core as mx

        mx.eval(array)
        self._pending[name] = array
        self._pending_bytes += array.nbytes
        self.total_bytes += array.nbytes
        self.peak_held_bytes = max(self.peak_held_bytes, self._pending_bytes)
        if self._pending_bytes >= self.max_shard_bytes:
            self._flush()

    def _flush(self) -> None:
        import mlx.core as mx

        if not self._pending:
            return
        path = self.folder / f".shard-{len(self._written) + 1:05d}.safetensors"
        mx.save_safetensors(str(path), self._pending, metadata={"format": "mlx"})
        self._written.append((path, sorted(self._pending)))
        self._pending = {}
        self._pending_bytes = 0

    def finish(self, total_parameters: int | None = None) -> list[str]:
        """Write the last shard, give every shard its final name, write the index; the shard names."""
        self._flush()
        count = len(self._written)
        fmt = "model-{:05d}-of-{:05d}.safetensors" if count > 1 else "model.safetensors"
        weight_map: dict[str, str] = {}
        names = []
        for i, (path, tensors) in enumerate(self._written):
            final = fmt.format(i + 1, count)
            path.rename(self.folder / final)
            names.append(final)
            weight_map.update({t: final for t in tensors})
        meta: dict[str, Any] = {"total_size": self.total_bytes}
        if total_parameters is not None:
            meta["total_parameters"] = total_parameters
        index = {"metadata": meta, "weight_map": dict(sorted(weight_map.items()))}
        (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=4))
        return names
