"""Where deployments live and the small records kept in each deployment's folder.

Root: ``--dir``, else ``$MLXK_DEPLOY_DIR``, else ``$XDG_CONFIG_HOME/mlxk/deployments``
(``~/.config/mlxk/deployments``). Each deployment owns ``<root>/<name>/`` and nothing
else: ``config.json``, ``logs/server.log``, ``install.json`` (which backend installed it,
the environment captured at install) and, for the process backend, ``run.json`` and
``server.pid``. Writes are atomic (temporary name, then rename).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxk.contract import MlxkError
from mlxk.store.register import atomic_write

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
_NAME_RE = re.compile(NAME_PATTERN)
LOG_NAME = "server.log"

# Read at install and handed to the service: where the models and mlxk's caches are.
# Never a secret: the API key travels by its own variable (see runner.py).
CAPTURED_ENV = ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "HF_ENDPOINT",
                "MLXK_CACHE_DIR", "XDG_CACHE_HOME", "MLXK_DEPLOY_DIR")


def deploy_root(explicit: str | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser().resolve()
    env = os.environ.get("MLXK_DEPLOY_DIR")
    if env:
        return Path(env).expanduser().resolve()
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config, "mlxk", "deployments").resolve()


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise MlxkError("ValidationError", f"Invalid deployment name '{name}': use up to 63 letters, digits, "
                        "'.', '_' and '-', starting with a letter or digit", field="name")
    return name


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class Deployment:
    """One deployment's folder and the paths inside it (nothing outside it)."""

    root: Path
    name: str

    @property
    def folder(self) -> Path:
        return self.root / self.name

    @property
    def config_path(self) -> Path:
        return self.folder / "config.json"

    @property
    def logs(self) -> Path:
        return self.folder / "logs"

    @property
    def log_path(self) -> Path:
        return self.logs / LOG_NAME

    @property
    def install_path(self) -> Path:
        return self.folder / "install.json"

    @property
    def run_path(self) -> Path:
        return self.folder / "run.json"

    @property
    def pid_path(self) -> Path:
        return self.folder / "server.pid"

    def exists(self) -> bool:
        return self.config_path.is_file()

    def install_record(self) -> dict[str, Any] | None:
        return read_json(self.install_path)

    def raw_config(self) -> dict[str, Any]:
        """The config as JSON (a parse error names the file's line and column)."""
        try:
            text = self.config_path.read_text()
        except FileNotFoundError:
            raise MlxkError("ValidationError", f"No deployment named '{self.name}'", field="name") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise MlxkError("ValidationError", f"{self.name}/config.json is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise MlxkError("ValidationError", f"{self.name}/config.json must hold a JSON object")
        return data

    def log_tail(self, lines: int = 20) -> list[str]:
        """The last ``lines`` lines of the log (progress bars' carriage returns folded)."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 256 * 1024))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return []
        out = [ln.rsplit("\r", 1)[-1] for ln in text.splitlines()]
        out = [ln for ln in out if ln.strip()]
        return out[-lines:] if lines > 0 else []


def get(root: Path, name: str) -> Deployment:
    dep = Deployment(root, check_name(name))
    if not dep.exists():
        raise MlxkError("ValidationError", f"No deployment named '{name}' in {root.name}/ "
                        "(mlxk deploy list shows them; mlxk deploy create makes one)", field="name")
    return dep


def all_deployments(root: Path) -> list[Deployment]:
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []
    return [Deployment(root, e.name) for e in entries
            if e.is_dir() and _NAME_RE.match(e.name) and (e / "config.json").is_file()]
