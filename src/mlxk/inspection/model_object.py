"""The contract's model object (spec 0.1.7), built from a resolved ModelRef."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from mlxk.inspection import classify, health, runtime
from mlxk.inspection.files import ModelFiles
from mlxk.store.names import ModelRef


def iso_utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Inspection:
    """Everything ``list``/``show``/``health`` report about one model."""

    ref: ModelRef
    files: ModelFiles
    framework: str
    model_type: str
    capabilities: list[str]
    health_reason: str | None
    runtime_compatible: bool
    reason: str | None
    gguf_meta: dict[str, Any] | None

    @property
    def healthy(self) -> bool:
        return self.health_reason is None

    def model_object(self) -> dict[str, Any]:
        snap = self.ref.snapshot
        size = snap.size_bytes if snap else self.files.size_bytes
        modified = snap.last_modified if snap else self.files.last_modified
        return {
            "name": self.ref.name,
            "hash": snap.commit if snap else None,
            "size_bytes": int(size),
            "last_modified": iso_utc(modified),
            "framework": self.framework,
            "model_type": self.model_type,
            "capabilities": list(self.capabilities),
            "health": "healthy" if self.healthy else "unhealthy",
            "runtime_compatible": self.runtime_compatible,
            "reason": self.reason,
            "cached": self.ref.cached,
        }


def _gguf_meta(mf: ModelFiles) -> dict[str, Any] | None:
    from mlxk.inspection.gguf_meta import GGUFError, read_metadata

    for f in mf.gguf_files:
        if f.broken or f.size < 24:
            continue
        try:
            return read_metadata(f.path)
        except (GGUFError, OSError):
            continue
    return None


def inspect(ref: ModelRef) -> Inspection:
    # A cache repo without any snapshot has no folder to read: it inspects as empty.
    mf = ModelFiles.read(ref.path) if ref.path is not None else ModelFiles(ref.repo.path / "snapshots")  # type: ignore[union-attr]
    fw = classify.framework(mf, ref.repo.repo_id if ref.repo else None)
    meta = _gguf_meta(mf) if fw == "GGUF" else None
    mtype, caps = classify.model_type_and_capabilities(mf, fw, meta)
    problem = health.integrity(mf, fw, ref.repo, ref.snapshot)
    if problem is None and fw == "GGUF" and meta is None:
        problem = f"{mf.gguf_files[0].name} has no readable GGUF header"
    ok, reason = runtime.runtime_gate(problem, fw, mf.config)
    return Inspection(ref, mf, fw, mtype, caps, problem, ok, reason, meta)
