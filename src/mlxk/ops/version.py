from __future__ import annotations

from mlxk import JSON_API_SPEC_VERSION, __version__
from mlxk.contract import Envelope
from mlxk.ops.system import memory_total_bytes


def version() -> Envelope:
    mem = memory_total_bytes()
    return Envelope.success(
        "version",
        {
            "cli_version": __version__,
            "json_api_spec_version": JSON_API_SPEC_VERSION,
            "system": {"memory_total_bytes": mem} if mem is not None else None,
        },
    )
