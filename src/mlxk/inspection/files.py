"""A model folder's files, read once and shared by every check."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".npz", ".pt", ".pth")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "vocab.txt", "spiece.model")
SKIP_DIRS = {".git", ".cache", "__pycache__", ".venv", "venv"}
LFS_HEADER = b"version https://git-lfs.github.com/spec/v1"


@dataclass(frozen=True)
class FileInfo:
    name: str  # posix path relative to the model folder
    path: Path
    size: int  # -1 for a broken symlink
    mtime: float

    @property
    def broken(self) -> bool:
        return self.size < 0

    @property
    def kind(self) -> str:
        """config / weights / tokenizer / other, as ``show --files`` reports."""
        base = self.name.rsplit("/", 1)[-1]
        if base.endswith(WEIGHT_SUFFIXES) and not base.endswith(".index.json"):
            return "weights"
        if base in TOKENIZER_FILES or base.endswith(".tiktoken"):
            return "tokenizer"
        if base.endswith((".json", ".jinja")):
            return "config"
        return "other"


@dataclass
class ModelFiles:
    """Everything the checks need to know about one folder, gathered with one walk."""

    root: Path
    files: dict[str, FileInfo] = field(default_factory=dict)

    @classmethod
    def read(cls, root: Path) -> "ModelFiles":
        mf = cls(root)
        if not root.is_dir():
            return mf
        stack = [root]
        while stack:
            folder = stack.pop()
            try:
                entries = list(folder.iterdir())
            except OSError:
                continue
            for entry in entries:
                if entry.is_dir():
                    if entry.name not in SKIP_DIRS:
                        stack.append(entry)
                    continue
                rel = entry.relative_to(root).as_posix()
                try:
                    st = entry.stat()
                    mf.files[rel] = FileInfo(rel, entry, st.st_size, st.st_mtime)
                except OSError:
                    mf.files[rel] = FileInfo(rel, entry, -1, 0.0)
        return mf

    def has(self, name: str) -> bool:
        f = self.files.get(name)
        return f is not None and not f.broken

    def with_suffix(self, *suffixes: str) -> list[FileInfo]:
        return sorted((f for f in self.files.values() if f.name.endswith(suffixes)), key=lambda f: f.name)

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files.values() if not f.broken)

    @property
    def last_modified(self) -> float:
        times = [f.mtime for f in self.files.values() if not f.broken]
        if times:
            return max(times)
        try:
            return self.root.stat().st_mtime
        except OSError:
            return 0.0

    def load_json(self, name: str) -> Any:
        """Parsed JSON, or None when absent/unreadable (health reports why)."""
        if not self.has(name):
            return None
        try:
            return json.loads(self.files[name].path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    @cached_property
    def config(self) -> dict[str, Any] | None:
        cfg = self.load_json("config.json")
        return cfg if isinstance(cfg, dict) else None

    @cached_property
    def tokenizer_config(self) -> dict[str, Any] | None:
        cfg = self.load_json("tokenizer_config.json")
        return cfg if isinstance(cfg, dict) else None

    @cached_property
    def readme_front_matter(self) -> dict[str, Any]:
        return read_front_matter(self.files["README.md"].path) if self.has("README.md") else {}

    @cached_property
    def gguf_files(self) -> list[FileInfo]:
        return self.with_suffix(".gguf")


def read_front_matter(path: Path) -> dict[str, Any]:
    """The YAML front matter of a model card (``---`` ... ``---``); {} when absent or malformed."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not match:
        return {}
    import yaml

    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def is_lfs_pointer(info: FileInfo) -> bool:
    if info.broken or info.size > 1024:
        return False
    try:
        with info.path.open("rb") as fh:
            return fh.read(len(LFS_HEADER)) == LFS_HEADER
    except OSError:
        return False
