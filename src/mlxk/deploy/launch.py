"""From a deployment's config to the ``mlxk serve`` command line (one place for the mapping).

* ``parameters`` → ``--temp --top-p --top-k --default-max-tokens``: the server's defaults
  for requests that do not set them. ``--max-tokens`` (the per-request ceiling, 4096 by
  default) is raised to ``parameters.max_tokens`` when that is larger, so the default is
  allowed; the model's context still bounds every request.
* ``kv_cache`` → ``--kv-bits --kv-group-size --kv-quantized-start``.
* ``server.prompt_cache_size`` (mlx-lm's count of cached prompts): ``0`` turns the prefix
  cache off (``--no-prefix-cache``); any other count leaves it on. mlxk bounds its prefix
  cache by bytes, not entries: ``server.prefix_cache_bytes`` → ``--prefix-cache-bytes``.
* ``server.trust_remote_code`` → ``--trust-remote-code`` only with the install-time opt-in.
* ``server.model_id`` and ``server.aliases`` are kept in the config: ``mlxk serve`` has no
  flag for a served name yet (clients use the model's own name).
* The API key never appears here: the runner hands it over in the environment.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mlxk.deploy.config import DeploymentConfig, model_base
from mlxk.deploy.store import Deployment

DEFAULT_MAX_TOKENS_CEILING = 4096


def model_arg(cfg: DeploymentConfig, dep: Deployment) -> str:
    """``model_path`` as ``mlxk serve --model`` takes it: relative folders made absolute."""
    from mlxk.store.names import is_path_spec

    spec = cfg.model_path
    if is_path_spec(spec):
        path = Path(spec).expanduser()
        return str(path if path.is_absolute() else (model_base(dep.root) / path).resolve())
    return spec


def serve_args(cfg: DeploymentConfig, dep: Deployment, trust_remote_code: bool = False) -> list[str]:
    """The arguments after ``mlxk serve`` (no secrets)."""
    s, p = cfg.server, cfg.parameters
    args = ["--model", model_arg(cfg, dep), "--host", s.host, "--port", str(s.port)]
    if p.max_tokens is not None:
        args += ["--default-max-tokens", str(p.max_tokens),
                 "--max-tokens", str(max(p.max_tokens, DEFAULT_MAX_TOKENS_CEILING))]
    for flag, value in (("--temp", p.temp), ("--top-p", p.top_p), ("--top-k", p.top_k)):
        if value is not None:
            args += [flag, str(value)]
    if cfg.kv_cache is not None:
        kv = cfg.kv_cache
        args += ["--kv-bits", str(kv.bits), "--kv-group-size", str(kv.group_size),
                 "--kv-quantized-start", str(kv.quantized_start)]
    if s.prompt_cache_size == 0:
        args.append("--no-prefix-cache")
    elif s.prefix_cache_bytes is not None:
        args += ["--prefix-cache-bytes", str(s.prefix_cache_bytes)]
    if s.idle_unload is not None:
        args += ["--idle-unload", str(s.idle_unload)]
    if s.max_concurrency is not None:
        args += ["--max-concurrency", str(s.max_concurrency)]
    for host in s.allowed_hosts:
        args.append(f"--allowed-host={host}")
    if s.api_key_file:
        args += ["--api-key-file", str(Path(s.api_key_file).expanduser())]
    if s.trust_remote_code and trust_remote_code:
        args.append("--trust-remote-code")
    return args


def runner_argv(dep: Deployment) -> list[str]:
    """What every backend runs: the runner reads the config at each start."""
    return [sys.executable, "-m", "mlxk.deploy.runner", "--root", str(dep.root), dep.name]


def health_url(cfg: DeploymentConfig) -> str:
    """Where this machine reaches the server's /health (a wildcard bind through loopback)."""
    host = cfg.server.host.strip("[]")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{cfg.server.port}/health"
