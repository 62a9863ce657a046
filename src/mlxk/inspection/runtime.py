"""The runtime gate: can the installed mlx-lm run this model?

Answered without importing mlx_lm (which imports mlx and transformers): the package is
located with ``importlib.util.find_spec``, the architecture module looked up as a file,
and ``MODEL_REMAPPING`` read from ``mlx_lm/utils.py`` with ``ast``.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any


@lru_cache(maxsize=1)
def mlx_lm_install() -> tuple[Path, str] | None:
    """(package folder, version) of the installed mlx-lm, or None."""
    try:
        spec = importlib.util.find_spec("mlx_lm")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    from importlib import metadata  # here, not at the top: `health` and `--version` never need it

    try:
        version = metadata.version("mlx-lm")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return Path(list(spec.submodule_search_locations)[0]), version


@lru_cache(maxsize=1)
def model_remapping() -> dict[str, str]:
    install = mlx_lm_install()
    if install is None:
        return {}
    try:
        tree = ast.parse((install[0] / "utils.py").read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return {}
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "MODEL_REMAPPING" for t in targets) and node.value is not None:
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return {}
            return value if isinstance(value, dict) else {}
    return {}


@lru_cache(maxsize=256)
def supports_architecture(model_type: str) -> bool:
    install = mlx_lm_install()
    if install is None:
        return False
    arch = model_remapping().get(model_type, model_type)
    return (install[0] / "models" / f"{arch}.py").is_file()


def gguf_hint() -> str:
    return "import with: mlxk convert <file.gguf> <target> (add --into-cache NAME to register it)"


def legacy_weights_only(weight_names: list[str]) -> list[str]:
    """Weight files mlx-lm would not load: it reads only ``model*.safetensors`` in the folder itself."""
    loadable = [n for n in weight_names if "/" not in n and n.startswith("model") and n.endswith(".safetensors")]
    return [] if loadable else sorted(weight_names)


def runtime_gate(
    health_reason: str | None, framework: str, config: dict[str, Any] | None, weight_names: list[str] | None = None
) -> tuple[bool, str | None]:
    """(runtime_compatible, reason) with the spec's gate: integrity problems first.

    ``weight_names``: the folder's .safetensors/.npz files (relative names), checked for MLX.
    """
    if health_reason:
        return False, health_reason
    if framework != "MLX":
        reason = f"Framework {framework} not executable with mlx-lm (requires MLX)"
        if framework == "GGUF":
            reason += f"; {gguf_hint()}"
        elif framework == "PyTorch":
            reason += "; convert with: mlxk convert <model> <target> --quantize 4"
        return False, reason
    install = mlx_lm_install()
    if install is None:
        return False, "mlx-lm is not installed (pip install mlx-lm)"
    legacy = legacy_weights_only(weight_names or [])
    if legacy:
        shown = ", ".join(legacy[:2]) + (f" (+{len(legacy) - 2} more)" if len(legacy) > 2 else "")
        return False, (f"Legacy weight files only ({shown}): mlx-lm {install[1]} loads model*.safetensors; "
                       "convert the original model again (mlxk convert <model> <target>)")
    model_type = (config or {}).get("model_type")
    if not isinstance(model_type, str) or not model_type:
        return False, "config.json has no model_type; architecture unknown to mlx-lm"
    if not supports_architecture(model_type):
        return False, f"Model architecture '{model_type}' not supported by installed mlx-lm {install[1]}"
    return True, None
