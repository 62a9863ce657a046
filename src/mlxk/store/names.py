"""Model names: validation, ``@hash`` pins, and resolution to one model.

Order of resolution (first that answers wins): an explicit path (workspace); the exact
``org/name``; a bare name as ``mlx-community/<name>``; a case-insensitive substring of
the full name. ``name@abcd`` narrows to repos holding a snapshot whose commit starts
with that prefix.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from mlxk.contract import MlxkError
from mlxk.store.cache import CachedRepo, Snapshot, scan

MAX_NAME_LEN = 96
DEFAULT_ORG = "mlx-community"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*(/[A-Za-z0-9._\-]+)?$")
_HEX_RE = re.compile(r"^[0-9a-fA-F]{4,40}$")


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: a cache snapshot or a workspace folder.

    ``name`` is what the contract reports: ``org/name`` for the cache, the full path of a
    workspace (spec 0.1.7: "except for workspace paths where name is the full path"), the
    same whether ``./ws``, ``ws/`` or ``../x/ws`` was typed. ``typed`` is the spec as given
    (messages may quote it).
    """

    name: str
    path: Path | None
    cached: bool
    repo: CachedRepo | None = None
    snapshot: Snapshot | None = None
    typed: str | None = None

    @property
    def commit(self) -> str | None:
        return self.snapshot.commit if self.snapshot else None


def is_path_spec(spec: str) -> bool:
    """Explicit paths only: ``.``, ``..``, ``./x``, ``../x``, ``/x``, ``~/x``, and ``x/`` (no
    Hugging Face name ends with a slash)."""
    return (spec in (".", "..") or spec.startswith(("./", "../", "/", "~")) or spec.startswith((".\\", "..\\"))
            or (len(spec) > 1 and spec.endswith(("/", "\\"))))


def full_path(spec: str | Path) -> Path:
    """The absolute, normalized path a workspace spec means (``..`` folded, links kept as named)."""
    return Path(os.path.abspath(os.path.expanduser(str(spec))))


def _workspace(path: Path, typed: str) -> ModelRef:
    return ModelRef(name=str(full_path(path)), path=path, cached=False, typed=typed)


def split_hash(spec: str) -> tuple[str, str | None]:
    if "@" not in spec:
        return spec, None
    name, _, pin = spec.rpartition("@")
    if not _HEX_RE.match(pin):
        raise MlxkError(
            "ValidationError",
            f"Invalid hash '{pin}' in '{spec}': use 4 to 40 hexadecimal characters of a snapshot commit",
        )
    return name, pin.lower()


def validate_name(name: str) -> None:
    if not name or not name.strip():
        raise MlxkError("ValidationError", "Model name is empty")
    if len(name) > MAX_NAME_LEN:
        raise MlxkError("ValidationError", f"Model name too long: {len(name)}/{MAX_NAME_LEN} characters")
    if not _NAME_RE.match(name) or "--" in name or ".." in name:
        raise MlxkError(
            "ValidationError",
            f"Invalid model name '{name}': use 'org/name' with letters, digits, '-', '_' and '.' only",
        )


def workspace_ref(spec: str) -> ModelRef:
    path = Path(spec).expanduser()
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise MlxkError("model_not_found", f"Workspace path '{spec}' {what}")
    return _workspace(path, spec)


# How deep `list <dir>` looks for model folders below the folder given.
WORKSPACE_DEPTH = 3
_SKIP = {"__pycache__", "node_modules", "venv"}


def is_model_folder(path: Path) -> bool:
    """A folder that holds a model: config.json, or a GGUF file, directly inside."""
    try:
        return (path / "config.json").is_file() or any(p.suffix == ".gguf" for p in path.iterdir())
    except OSError:
        return False


def _join(typed: str, rel: str) -> str:
    return typed + rel if typed.endswith(("/", "\\")) else f"{typed}/{rel}"


def _models_below(folder: Path, typed: str, depth: int) -> list[ModelRef]:
    """Model folders under ``folder`` (not through links, hidden or tool folders), named below ``typed``."""
    found: list[ModelRef] = []
    try:
        entries = sorted(e for e in folder.iterdir() if e.is_dir() and not e.is_symlink())
    except OSError:
        return found
    for entry in entries:
        if entry.name.startswith(".") or entry.name in _SKIP:
            continue
        name = _join(typed, entry.name)
        if is_model_folder(entry):
            found.append(_workspace(entry, name))
        elif depth > 1:
            found.extend(_models_below(entry, name, depth - 1))
    return found


def workspace_refs(spec: str) -> list[ModelRef]:
    """The workspace models a path means, as MLX-Knife's `list <path>` does, sorted by name.

    A model folder: itself. A folder: the model folders under it. Otherwise the last part
    is a prefix: the model folders (or folders holding them) in the parent whose name
    starts with it. Names are full paths (spec 0.1.7), whatever relative form was typed.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        if is_model_folder(path):
            return [_workspace(path, spec)]
        return sorted(_models_below(path, spec, WORKSPACE_DEPTH), key=lambda r: r.name)
    typed_parent, _, prefix = spec.replace("\\", "/").rpartition("/")
    parent = path.parent
    if not prefix or not parent.is_dir():
        raise MlxkError("model_not_found", f"Workspace path '{spec}' does not exist")
    found = []
    for entry in sorted(parent.iterdir()):
        if entry.name.startswith(prefix) and entry.is_dir() and not entry.is_symlink():
            name = _join(typed_parent or "/", entry.name)
            if is_model_folder(entry):
                found.append(_workspace(entry, name))
            else:
                found.extend(_models_below(entry, name, WORKSPACE_DEPTH - 1))
    return sorted(found, key=lambda r: r.name)


def match_repos(pattern: str, repos: list[CachedRepo]) -> list[CachedRepo]:
    """The repos a name means, before any hash pin: exact, mlx-community/, substring."""
    exact = [r for r in repos if r.repo_id == pattern]
    if exact:
        return exact
    exact_ci = [r for r in repos if r.repo_id.lower() == pattern.lower()]
    if exact_ci:
        return exact_ci
    if "/" not in pattern:
        short = [r for r in repos if r.repo_id.lower() == f"{DEFAULT_ORG}/{pattern}".lower()]
        if short:
            return short
    needle = pattern.lower()
    return [r for r in repos if needle in r.repo_id.lower()]


def resolve(spec: str, repos: list[CachedRepo] | None = None) -> ModelRef:
    """One model for ``spec`` or an MlxkError (ValidationError, model_not_found, ambiguous_match)."""
    spec = spec.strip() if spec else spec
    if spec and is_path_spec(spec):
        return workspace_ref(spec)
    name, pin = split_hash(spec or "")
    validate_name(name)
    repos = scan() if repos is None else repos
    hits = match_repos(name, repos)
    if pin:
        pinned = [r for r in hits if r.selected(pin) is not None]
        if not pinned and hits:
            hashes = sorted(s.commit[:8] for r in hits for s in r.snapshots)
            raise MlxkError(
                "model_not_found",
                f"No snapshot of '{name}' has a commit starting with '{pin}'",
                available_hashes=hashes,
            )
        hits = pinned
    if not hits:
        raise MlxkError("model_not_found", f"No model found matching '{spec}'")
    if len(hits) > 1:
        names = sorted((r.repo_id for r in hits), key=str.lower)
        raise MlxkError("ambiguous_match", f"Multiple models match '{spec}'", matches=names)
    repo = hits[0]
    snap = repo.selected(pin)
    return ModelRef(name=repo.repo_id, path=snap.path if snap else None, cached=True, repo=repo, snapshot=snap)
