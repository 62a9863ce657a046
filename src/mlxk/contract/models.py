"""Pydantic models of every ``--json`` answer (spec 0.1.7).

These are the contract in code: the tests validate each answer against them and
``mlxk schema`` publishes their JSON schema. Operations build plain dicts (pydantic
stays off the start-up path of read-only commands); the models check them.
Strict objects (``extra="forbid"``) are the ones the upstream schema keeps strict.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

ISO_Z = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"
HASH40 = r"^[A-Za-z0-9]{40}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ModelObject(Strict):
    name: str
    hash: Optional[str] = Field(pattern=HASH40)
    size_bytes: int = Field(ge=0)
    last_modified: str = Field(pattern=ISO_Z)
    framework: Literal["MLX", "GGUF", "PyTorch", "Unknown"]
    model_type: str
    capabilities: list[str]
    health: Literal["healthy", "unhealthy"]
    runtime_compatible: bool
    reason: Optional[str]
    cached: bool


class ErrorObject(Open):
    type: str
    message: str
    matches: Optional[list[str]] = None


class SystemObject(Strict):
    memory_total_bytes: int = Field(ge=0)


class VersionData(Strict):
    cli_version: str
    json_api_spec_version: str = Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")
    system: Optional[SystemObject]


class ListData(Strict):
    models: list[ModelObject]
    count: int = Field(ge=0)


class HealthEntry(Strict):
    name: str
    status: Literal["healthy", "unhealthy"]
    reason: str


class HealthSummary(Strict):
    total: int = Field(ge=0)
    healthy_count: int = Field(ge=0)
    unhealthy_count: int = Field(ge=0)


class HealthData(Strict):
    healthy: list[HealthEntry]
    unhealthy: list[HealthEntry]
    summary: HealthSummary


class FileEntry(Strict):
    name: str
    size: str
    type: str


class ShowData(Open):
    model: ModelObject
    metadata: Optional[dict[str, Any]] = None
    files: Optional[list[FileEntry]] = None
    config: Optional[dict[str, Any]] = None


class RmData(Open):
    model: Optional[str] = None
    action: str
    message: str


class PullData(Open):
    model: Optional[str]
    download_status: str
    message: str
    expanded_name: Optional[str]


class CloneData(Open):
    model: str
    clone_status: str
    message: str
    target_dir: str


class PushData(Open):
    repo_id: str
    branch: str
    repo_url: str
    commit_sha: Optional[str] = None
    uploaded_files_count: Optional[int] = Field(default=None, ge=0)


class ConvertData(Open):
    source: str
    target: str
    mode: str


class RunData(Open):
    model: str
    prompt: str
    response: str
    tokens_generated: int
    generation_time_s: float
    model_type: Optional[str] = None  # "base": no chat template, the prompt was completed as plain text
    chat_template: Optional[bool] = None  # whether the prompt went through the model's chat template


SUCCESS_DATA: dict[str, type[BaseModel]] = {
    "version": VersionData,
    "list": ListData,
    "show": ShowData,
    "health": HealthData,
    "rm": RmData,
    "pull": PullData,
    "clone": CloneData,
    "push": PushData,
    "convert": ConvertData,
    "run": RunData,
}

Command = Literal[
    "list", "show", "health", "pull", "rm", "clone", "convert", "version", "push", "run",
    "server", "doctor", "demo", "schema", "deploy",
]


class EnvelopeModel(Strict):
    status: Literal["success", "error"]
    command: Command
    data: Union[dict[str, Any], None]
    error: Optional[ErrorObject]


def validate_envelope(payload: dict[str, Any]) -> EnvelopeModel:
    """Validate an answer: the envelope always, and the data of successful answers."""
    env = EnvelopeModel.model_validate(payload)
    if env.status == "success":
        assert env.error is None, "success envelope carries an error"
        model = SUCCESS_DATA.get(env.command)
        if model is not None:
            model.model_validate(payload["data"])
    else:
        assert env.error is not None, "error envelope without error object"
    return env


def json_schema() -> dict[str, Any]:
    """One document: the envelope and every command's data model."""
    defs: dict[str, Any] = {}
    for command, model in SUCCESS_DATA.items():
        defs[f"{command}_data"] = model.model_json_schema(ref_template="#/$defs/{model}")
    envelope = EnvelopeModel.model_json_schema(ref_template="#/$defs/{model}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "mlxk JSON API (spec 0.1.7)",
        "envelope": envelope,
        "data_by_command": defs,
    }
