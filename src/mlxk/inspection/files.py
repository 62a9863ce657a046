"""A model folder's files, read once and shared by every check."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

# What a download (or copy) that never finished leaves in a model folder: huggingface_hub's
# own ``.incomplete``, and ``.partial``/``.tmp`` of other downloaders (curl, wget, browsers, rsync).
UNFINISHED_SUFFIXES = (".partial", ".tmp", ".incomplete")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".npz", ".pt", ".pth")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "vocab.txt", "spiece.model")
SKIP_DIRS = {".git", ".cache", "__pycache__", ".venv", "venv"}
LFS_HEADER = b"version https://git-lfs.github.com/spec/v1"
# JSON files up to this size are parsed in full by the checks; larger ones (a 10-30 MB
# tokenizer.json) only for truncation, since parsing them costs ~15 ms/MB on every list.
JSON_PARSE_LIMIT = 1 << 20


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
    _json: dict[str, tuple[Any, bool]] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def read(cls, root: Path) -> "ModelFiles":
        """One ``os.scandir`` walk (``health`` runs it for every model in the cache)."""
        mf = cls(root)
        if not root.is_dir():
            return mf
        stack = [(root, "")]
        while stack:
            folder, prefix = stack.pop()
            try:
                with os.scandir(folder) as it:
                    entries = list(it)
            except OSError:
                continue
            for entry in entries:
                rel = prefix + entry.name
                try:
                    is_dir = entry.is_dir()
                except OSError:  # a link loop (ELOOP): listed as a broken file, never followed
                    is_dir = False
                if is_dir:
                    # Never descend through a linked folder: a link loop (a -> .) would make the
                    # walk endless. Model folders link files (HF blobs), not folders.
                    if entry.name not in SKIP_DIRS and not entry.is_symlink():
                        stack.append((Path(entry.path), rel + "/"))
                    continue
                path = Path(entry.path)
                try:
                    st = entry.stat()
                    mf.files[rel] = FileInfo(rel, path, st.st_size, st.st_mtime)
                except OSError:
                    mf.files[rel] = FileInfo(rel, path, -1, 0.0)
        return mf

    def has(self, name: str) -> bool:
        f = self.files.get(name)
        return f is not None and not f.broken

    def with_suffix(self, *suffixes: str) -> list[FileInfo]:
        return sorted((f for f in self.files.values() if f.name.endswith(suffixes)), key=lambda f: f.name)

    def unfinished(self) -> list[FileInfo]:
        """Files a download left half-written (``*.partial``, ``*.tmp``, ``*.incomplete``)."""
        return self.with_suffix(*UNFINISHED_SUFFIXES)

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

    def _parsed(self, name: str) -> tuple[Any, bool]:
        """(value, parsed) of a JSON file, read once for all the checks that ask."""
        if name not in self._json:
            try:
                self._json[name] = (json.loads(self.files[name].path.read_bytes()), True)
            except (OSError, ValueError):
                self._json[name] = (None, False)
        return self._json[name]

    def json_problem(self, name: str) -> str | None:
        """Why the JSON file ``name`` cannot be read (None when it is fine or absent)."""
        if not self.has(name):
            return None
        if self.files[name].size > JSON_PARSE_LIMIT:
            return None if _looks_whole(self.files[name].path) else f"{name} is not valid JSON (truncated)"
        return None if self._parsed(name)[1] else f"{name} is not valid JSON"

    def load_json(self, name: str) -> Any:
        """Parsed JSON, or None when absent/unreadable (health reports why)."""
        return self._parsed(name)[0] if self.has(name) else None

    def lfs_pointers(self) -> list[FileInfo]:
        """Files that are Git LFS pointer texts instead of content (a JSON file that parses is none)."""
        out = []
        for f in sorted(self.files.values(), key=lambda f: f.name):
            if f.name.endswith(".json") and f.size in LFS_POINTER_SIZES and self._parsed(f.name)[1]:
                continue
            if is_lfs_pointer(f):
                out.append(f)
        return out

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

    @cached_property
    def gguf_meta(self) -> dict[str, Any] | None:
        """Header metadata of the first readable GGUF file (arrays as lengths only)."""
        from mlxk.inspection.gguf_meta import GGUFError, read_metadata

        for f in self.gguf_files:
            if f.broken or f.size < 24:
                continue
            try:
                return read_metadata(f.path)
            except (GGUFError, OSError):
                continue
        return None


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


def _looks_whole(path: Path) -> bool:
    """A large JSON document starts with '{' or '[' and ends with the matching bracket."""
    try:
        with path.open("rb") as fh:
            head = fh.read(256).lstrip()
            fh.seek(-256, 2)
            tail = fh.read().rstrip()
    except OSError:
        return False
    return (head[:1], tail[-1:]) in ((b"{", b"}"), (b"[", b"]"))


# A pointer file holds at least its header line; pointers with extensions stay under 1 KiB.
LFS_POINTER_SIZES = range(len(LFS_HEADER), 1025)


def is_lfs_pointer(info: FileInfo) -> bool:
    if info.broken or info.size not in LFS_POINTER_SIZES:
        return False
    try:
        with info.path.open("rb") as fh:
            return fh.read(len(LFS_HEADER)) == LFS_HEADER
    except OSError:
        return False
