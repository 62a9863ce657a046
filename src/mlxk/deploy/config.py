"""``config.json`` of a deployment: the mlx-tools schema unchanged, plus mlxk's optional fields.

Checked in two steps, both before anything is installed or started, each error naming
its field: the shape (pydantic, strict: an unknown key or a wrong type is an error), then
what the shape cannot tell (the model exists, the port is not another deployment's, a
non-loopback host has an API key, no remote code without an explicit opt-in).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlxk.contract import MlxkError
from mlxk.deploy.store import NAME_PATTERN, Deployment, all_deployments

from mlxk.engine.solo import KV_BITS, KV_GROUP_SIZES  # one list of what mx.quantize supports
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Parameters(_Strict):
    """The server's defaults for requests that do not set them."""

    temp: Optional[float] = Field(None, ge=0, le=10)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    top_k: Optional[int] = Field(None, ge=0)
    max_tokens: Optional[int] = Field(None, ge=1)


class KVCache(_Strict):
    bits: Literal[KV_BITS]  # type: ignore[valid-type]
    group_size: Literal[KV_GROUP_SIZES] = 64  # type: ignore[valid-type]
    quantized_start: int = Field(0, ge=0)


class Server(_Strict):
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8000, ge=1, le=65535)
    model_id: Optional[str] = Field(None, min_length=1)
    trust_remote_code: bool = False
    prompt_cache_size: Optional[int] = Field(None, ge=0)
    # mlxk's own, all optional
    api_key_env: Optional[str] = Field(None, pattern=ENV_NAME)
    api_key_file: Optional[str] = Field(None, min_length=1)
    aliases: list[str] = Field(default_factory=list)
    prefix_cache_bytes: Optional[int] = Field(None, ge=0)
    idle_unload: Optional[float] = Field(None, gt=0)
    max_concurrency: Optional[int] = Field(None, ge=1)
    allowed_hosts: list[str] = Field(default_factory=list)


class DeploymentConfig(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    display_name: Optional[str] = None
    model_path: str = Field(min_length=1)
    parameters: Parameters = Field(default_factory=Parameters)
    kv_cache: Optional[KVCache] = None
    server: Server = Field(default_factory=Server)


def _field(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(config)"


def parse(data: dict[str, Any], where: str = "config.json") -> DeploymentConfig:
    """The shape: every problem at once, each as ``field: what is wrong``."""
    try:
        return DeploymentConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            field = _field(e["loc"])
            msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
            problems.append({"field": field, "message": msg})
        text = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        raise MlxkError("ValidationError", f"{where}: {text}", field=problems[0]["field"], problems=problems) from None


def _bad(field: str, message: str, where: str, **extra: Any) -> MlxkError:
    return MlxkError("ValidationError", f"{where}: {field}: {message}", field=field, **extra)


def model_base(root: Path) -> Path:
    """Relative folders in ``model_path`` (``./local-models/x``) are relative to the root's parent,
    the project folder that holds ``deploy/`` in the mlx-tools layout."""
    return root.parent


def model_kind(spec: str, base: Path, where: str = "config.json") -> str:
    """``cache``, ``hub`` (org/name, pulled on first start) or ``folder``; else a ValidationError."""
    from mlxk.store.names import is_model_folder, is_path_spec, resolve, split_hash, validate_name

    if is_path_spec(spec):
        path = Path(spec).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_dir():
            raise _bad("model_path", f"the folder '{spec}' does not exist", where)
        if not is_model_folder(path):
            raise _bad("model_path", f"the folder '{spec}' holds no model (no config.json or .gguf)", where)
        return "folder"
    try:
        name, _ = split_hash(spec)
        validate_name(name)
        resolve(spec)
        return "cache"
    except MlxkError as err:
        if err.type == "ambiguous_match":
            raise _bad("model_path", f"'{spec}' matches several cached models ({', '.join(err.extra['matches'])}); "
                       "name one exactly", where, matches=err.extra["matches"]) from None
        if err.type == "model_not_found" and "/" in spec and "@" not in spec:
            return "hub"
        raise _bad("model_path", f"'{spec}' is not in the cache, not a Hub name (org/name) and not a folder "
                   "(a folder is written ./name, ../name, /path or ~/path)", where) from None


def port_owner(cfg: DeploymentConfig, dep: Deployment) -> str | None:
    """Another deployment in the same root that uses the same port (configs that do not parse are skipped)."""
    import json

    for other in all_deployments(dep.root):
        if other.name == dep.name:
            continue
        try:
            port = json.loads(other.config_path.read_text()).get("server", {}).get("port", 8000)
        except (OSError, ValueError, AttributeError):
            continue
        if port == cfg.server.port:
            return other.name
    return None


def check(cfg: DeploymentConfig, dep: Deployment, allow_remote_code: bool = False) -> str:
    """What the shape cannot tell; returns the model's kind (see :func:`model_kind`)."""
    from mlxk.server.security import is_loopback

    where = f"{dep.name}/config.json"
    if cfg.name != dep.name:
        raise _bad("name", f"'{cfg.name}' differs from its folder name '{dep.name}'", where)
    if cfg.server.trust_remote_code and not allow_remote_code:
        raise _bad("server.trust_remote_code", "true would run Python code shipped with the model; mlxk never "
                   "does that by default. Set it to false (MLX models need no remote code), or pass "
                   "--trust-remote-code to install/start if you trust this model's code", where)
    if not is_loopback(cfg.server.host) and not (cfg.server.api_key_env or cfg.server.api_key_file):
        raise _bad("server.host", f"'{cfg.server.host}' is reachable from other machines and needs an API key: "
                   "set server.api_key_env to the name of an environment variable holding it "
                   "(or server.api_key_file to a file holding it)", where)
    owner = port_owner(cfg, dep)
    if owner:
        raise _bad("server.port", f"port {cfg.server.port} is already used by the deployment '{owner}'", where,
                   deployment=owner)
    return model_kind(cfg.model_path, model_base(dep.root), where)


def load(dep: Deployment, allow_remote_code: bool = False) -> tuple[DeploymentConfig, str]:
    """Parse and check one deployment's config: (config, model kind)."""
    cfg = parse(dep.raw_config(), f"{dep.name}/config.json")
    return cfg, check(cfg, dep, allow_remote_code)


def to_json(cfg: DeploymentConfig) -> dict[str, Any]:
    """The config as written: unset optional fields left out."""
    return cfg.model_dump(exclude_none=True, exclude_defaults=False)
