"""The Gemini request bodies (generateContent, countTokens) as pydantic models.

Google's APIs read proto3 JSON: every field under its camelCase name or its proto
(snake_case) name, and google-genai sends both kinds (``parameters_json_schema`` inside a
declaration, ``generationConfig`` around it). One mechanism covers every field: names are
snake_case here, each accepted under both spellings (``alias_generator=to_camel``), and
errors and logs name them in camelCase. Fields marked Ignored / Refused follow the rule in
request_fields.py.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AliasChoices, ConfigDict, Field
from pydantic.alias_generators import to_camel

from mlxk.engine.requests import MAX_STOPS, MaxTokens, Probability, Seed, Temperature, TopK
from mlxk.server.request_fields import Ignored, Refused, Reviewed, given, more_than_one, truthy


class _Model(Reviewed):
    """Google's APIs read proto3 JSON: every field under its camelCase name or its proto
    (snake_case) name; google-genai sends both kinds (``parameters_json_schema`` inside a
    declaration, ``generationConfig`` around it). Fields are named in snake_case here and
    accepted under both spellings; errors and logs name them in camelCase."""

    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, validate_by_name=True, validate_by_alias=True,
                              serialize_by_alias=True)


SERVER_TOOL = Refused("server-side tools (search, code execution, retrieval, ...) are not run here: declare "
                      "functions instead")


class FunctionCall(_Model):
    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None
    partial_args: Annotated[Any, Ignored()] = None
    will_continue: Annotated[Any, Ignored()] = None


class FunctionResponse(_Model):
    name: str
    response: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None
    parts: Annotated[Any, Ignored()] = None
    will_continue: Annotated[Any, Ignored()] = None
    scheduling: Annotated[Any, Ignored()] = None


class Part(_Model):
    text: str | None = None
    thought: bool | None = None
    thought_signature: Annotated[Any, Ignored()] = None
    function_call: FunctionCall | None = None
    function_response: FunctionResponse | None = None
    inline_data: dict[str, Any] | None = None
    file_data: dict[str, Any] | None = None
    executable_code: Annotated[Any, Refused("code execution is not supported here", truthy)] = None
    code_execution_result: Annotated[Any, Refused("code execution is not supported here", truthy)] = None
    video_metadata: Annotated[Any, Ignored()] = None
    media_resolution: Annotated[Any, Ignored()] = None
    part_metadata: Annotated[Any, Ignored()] = None


class Content(_Model):
    role: Literal["user", "model", "function", "system"] | None = None
    parts: list[Part] = Field(default_factory=list)


TYPE_FORMATS = {"int32", "int64", "float", "double", "enum"}  # the dialect's; not JSON Schema formats


class Schema(_Model):
    """Google's schema dialect (OpenAPI 3.0 subset: ``"type": "OBJECT"``, ``nullable``,
    ``propertyOrdering``), read in either spelling; :meth:`json_schema` is the JSON Schema
    the engine compiles (an object with ``properties`` holds only those, as Gemini answers).
    Keywords outside the dialect are passed on as written."""

    model_config = ConfigDict(extra="allow")
    kept_extras: ClassVar[bool] = True
    type: str | list[str] | None = None
    format: str | None = None
    title: str | None = None
    description: str | None = None
    nullable: bool | None = None
    enum: list[Any] | None = None
    default: Any = None
    example: Annotated[Any, Ignored()] = None
    items: "Schema | None" = None
    min_items: int | None = None
    max_items: int | None = None
    properties: "dict[str, Schema] | None" = None
    property_ordering: list[str] | None = None
    required: list[str] | None = None
    min_properties: int | None = None
    max_properties: int | None = None
    additional_properties: "bool | Schema | None" = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    any_of: "list[Schema] | None" = None
    ref: str | None = Field(None, validation_alias=AliasChoices("$ref", "ref"), serialization_alias="$ref")
    defs: "dict[str, Schema] | None" = Field(None, validation_alias=AliasChoices("$defs", "defs"),
                                             serialization_alias="$defs")

    def json_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if value is None or name in ("nullable", "property_ordering", "example") or name not in self.model_fields_set:
                continue
            key = info.serialization_alias or info.alias or name
            if name == "format" and value in TYPE_FORMATS:
                continue  # the type (or enum) says it; JSON Schema has no such format
            if name == "type":
                value = [t.lower() for t in value] if isinstance(value, list) else value.lower()
            elif isinstance(value, Schema):
                value = value.json_schema()
            elif name == "any_of":
                value = [s.json_schema() for s in value]
            elif name in ("properties", "defs"):
                order = self.property_ordering or [] if name == "properties" else []
                keys = [k for k in order if k in value] + [k for k in value if k not in order]
                value = {k: value[k].json_schema() for k in keys}
            out[key] = value
        if out.get("type") == "object" and self.properties is not None and self.additional_properties is None:
            out["additionalProperties"] = False  # the dialect's objects hold their listed properties only
        if self.nullable and "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = types + ["null"] if "null" not in types else types
        return {**out, **(self.model_extra or {})}


class FunctionDeclaration(_Model):
    name: str
    description: str | None = None
    parameters: Schema | None = None
    parameters_json_schema: dict[str, Any] | None = None
    response: Annotated[Any, Ignored()] = None
    response_json_schema: Annotated[Any, Ignored()] = None
    behavior: Annotated[Any, Ignored()] = None

    def arguments_schema(self) -> dict[str, Any]:
        """What the call's arguments must match: the JSON Schema as given, or the dialect's."""
        if self.parameters_json_schema is not None:
            return self.parameters_json_schema
        return self.parameters.json_schema() if self.parameters is not None else {"type": "object"}


class Tool(_Model):
    function_declarations: list[FunctionDeclaration] | None = None
    google_search: Annotated[Any, SERVER_TOOL] = None
    google_search_retrieval: Annotated[Any, SERVER_TOOL] = None
    code_execution: Annotated[Any, SERVER_TOOL] = None
    retrieval: Annotated[Any, SERVER_TOOL] = None
    url_context: Annotated[Any, SERVER_TOOL] = None
    google_maps: Annotated[Any, SERVER_TOOL] = None
    file_search: Annotated[Any, SERVER_TOOL] = None
    computer_use: Annotated[Any, SERVER_TOOL] = None
    enterprise_web_search: Annotated[Any, SERVER_TOOL] = None
    mcp_servers: Annotated[Any, SERVER_TOOL] = None


class FunctionCallingConfig(_Model):
    mode: Literal["AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"] | None = None
    allowed_function_names: list[str] | None = None
    stream_function_call_arguments: Annotated[Any, Ignored()] = None


class ToolConfig(_Model):
    function_calling_config: FunctionCallingConfig | None = None
    retrieval_config: Annotated[Any, Ignored()] = None
    include_server_side_tool_invocations: Annotated[Any, Ignored()] = None


def _not_text(modalities: Any) -> bool:
    return any(m != "TEXT" for m in modalities or [])


def _penalty(value: Any) -> bool:
    return value is not None and value != 0


MIME_TYPES = ("text/plain", "application/json")


class GenerationConfig(_Model):
    temperature: Temperature | None = None
    top_p: Probability | None = None
    top_k: TopK | None = None
    seed: Seed | None = None
    max_output_tokens: MaxTokens | None = None
    stop_sequences: list[str] | None = Field(None, max_length=MAX_STOPS)
    candidate_count: Annotated[int | None, Field(ge=1), Refused("one candidate per request", more_than_one)] = None
    response_mime_type: Annotated[str | None, Refused(f"answers here are {' or '.join(MIME_TYPES)}",
                                                      lambda v: v is not None and v not in MIME_TYPES)] = None
    response_schema: Schema | None = None
    response_json_schema: dict[str, Any] | None = None
    response_modalities: Annotated[list[str] | None, Refused("answers here are text only", _not_text)] = None
    presence_penalty: Annotated[float | None, Refused("not supported here (leave it 0)", _penalty)] = None
    frequency_penalty: Annotated[float | None, Refused("not supported here (leave it 0)", _penalty)] = None
    response_logprobs: Annotated[bool | None, Refused("log probabilities are not returned here", truthy)] = None
    logprobs: Annotated[int | None, Refused("log probabilities are not returned here", given)] = None
    speech_config: Annotated[Any, Refused("answers here are text only", given)] = None
    thinking_config: Annotated[Any, Ignored()] = None
    media_resolution: Annotated[Any, Ignored()] = None
    image_config: Annotated[Any, Ignored()] = None
    routing_config: Annotated[Any, Ignored()] = None
    model_selection_config: Annotated[Any, Ignored()] = None
    audio_timestamp: Annotated[Any, Ignored()] = None
    enable_affective_dialog: Annotated[Any, Ignored()] = None
    enable_enhanced_civic_answers: Annotated[Any, Ignored()] = None


class GenerateContentRequest(_Model):
    """The body of :generateContent / :streamGenerateContent (see request_fields for what is
    ignored or refused)."""

    contents: list[Content] = Field(min_length=1)
    system_instruction: Content | None = None
    tools: list[Tool] | None = None
    tool_config: ToolConfig | None = None
    generation_config: GenerationConfig | None = None
    cached_content: Annotated[str | None, Refused("no content is cached here: send the whole conversation in "
                                                  "'contents'", truthy)] = None
    safety_settings: Annotated[Any, Ignored()] = None
    labels: Annotated[Any, Ignored()] = None
    model: Annotated[Any, Ignored()] = None


class CountTokensRequest(_Model):
    contents: list[Content] | None = None
    generate_content_request: GenerateContentRequest | None = None
