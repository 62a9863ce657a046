"""The contract's model object (spec 0.1.7), built from a resolved ModelRef."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from mlxk.inspection import classify, health, runtime
from mlxk.inspection.files import ModelFiles
from mlxk.store.names import ModelRef


# A snapshot folder named by anything but a commit (a branch name, a copy) has no hash to report.
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


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
            "hash": snap.commit if snap and COMMIT_RE.match(snap.commit) else None,
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


def _files(ref: ModelRef) -> ModelFiles:
    # A cache repo without any snapshot has no folder to read: it inspects as empty.
    return ModelFiles.read(ref.path) if ref.path is not None else ModelFiles(ref.repo.path / "snapshots")  # type: ignore[union-attr]


def is_gguf(mf: ModelFiles, repo_id: str | None) -> bool:
    """Whether the GGUF rules apply; classifies only folders that hold a GGUF file."""
    return bool(mf.gguf_files) and classify.framework(mf, repo_id) == "GGUF"


def health_reason(ref: ModelRef) -> str | None:
    """Integrity alone, as ``health`` reports it: the same checks as ``inspect``, no classification."""
    mf = _files(ref)
    return health.integrity(mf, is_gguf(mf, ref.repo.repo_id if ref.repo else None), ref.repo, ref.snapshot)


def inspect(ref: ModelRef) -> Inspection:
    mf = _files(ref)
    fw = classify.framework(mf, ref.repo.repo_id if ref.repo else None)
    meta = mf.gguf_meta if fw == "GGUF" else None
    mtype, caps = classify.model_type_and_capabilities(mf, fw, meta)
    problem = health.integrity(mf, fw == "GGUF", ref.repo, ref.snapshot)
    weights = [f.name for f in mf.with_suffix(".safetensors", ".npz")]
    ok, reason = runtime.runtime_gate(problem, fw, mf.config, weights)
    return Inspection(ref, mf, fw, mtype, caps, problem, ok, reason, meta)
