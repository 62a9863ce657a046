"""The upstream MLX-Knife JSON schema (0.2.2), kept in the tests so its checks never skip (see README.md)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

UPSTREAM_SCHEMA = Path(__file__).resolve().parent / "upstream-json-api-schema-0.2.2.json"


@lru_cache(maxsize=1)
def upstream_schema() -> dict:
    return json.loads(UPSTREAM_SCHEMA.read_text())


def upstream_validate(payload: dict) -> None:
    """Our answers must also satisfy the upstream project's published schema."""
    import jsonschema

    jsonschema.validate(payload, upstream_schema())
