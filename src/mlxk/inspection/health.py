"""Integrity: are the files whole? The first problem found is the reason.

Order (issue #2): files a download left unfinished; config.json; weights present; index vs shards; shards without an
index; Git LFS pointers; interrupted downloads; the other JSON files; tokenizer files;
a vision model's image preprocessor; a GGUF file's header. ``list``, ``show``,
``health`` and ``push --check-only`` all use these, through ``file_problems``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mlxk.inspection.classify import is_vision_model
from mlxk.inspection.files import FileInfo, ModelFiles
from mlxk.store.cache import CachedRepo, Snapshot, incomplete_blobs

_SHARD_RE = re.compile(r"^(?P<stem>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.(?P<ext>safetensors|bin)$")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# Read by the tokenizer and processor at load time: a broken one fails there, so health names it.
JSON_FILES = ("tokenizer_config.json", "tokenizer.json", "special_tokens_map.json", "preprocessor_config.json")
PREPROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def _names(files: list[FileInfo], limit: int = 3) -> str:
    shown = ", ".join(f.name for f in files[:limit])
    return shown + (f" (+{len(files) - limit} more)" if len(files) > limit else "")


def check_config(mf: ModelFiles) -> str | None:
    if not mf.has("config.json"):
        return "config.json missing"
    if mf.json_problem("config.json"):
        return "config.json is not valid JSON"
    if not isinstance(mf.load_json("config.json"), dict):
        return "config.json is not a JSON object"
    return None


def check_weights(mf: ModelFiles, gguf: bool) -> str | None:
    suffixes = (".gguf",) if gguf else (".safetensors", ".bin", ".npz", ".gguf")
    weights = [f for f in mf.with_suffix(*suffixes) if not f.broken]
    if not weights:
        return "No model weights found (" + ", ".join("*" + s for s in suffixes) + ")"
    return None


def check_shards(mf: ModelFiles) -> str | None:
    for index_name in INDEX_FILES:
        if index_name not in mf.files:
            continue
        index = mf.load_json(index_name)
        if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
            return f"{index_name} is not a valid weight index"
        shards = sorted(set(index["weight_map"].values()))
        missing = [s for s in shards if not mf.has(s)]
        if missing:
            return f"Missing shards listed in {index_name}: " + ", ".join(missing[:3]) + (
                f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
            )
        empty = [mf.files[s] for s in shards if mf.files[s].size == 0]
        if empty:
            return f"Empty shard files: {_names(empty)}"
    groups: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for name in mf.files:
        m = _SHARD_RE.match(name.rsplit("/", 1)[-1])
        if m:
            groups.setdefault((m["stem"], m["ext"]), []).append((int(m["i"]), int(m["n"])))
    for (stem, ext), parts in groups.items():
        index_name = "model.safetensors.index.json" if ext == "safetensors" else "pytorch_model.bin.index.json"
        if index_name not in mf.files:
            return f"Sharded weights without index: {stem}-*.{ext} found but {index_name} missing"
        total = parts[0][1]
        if len({i for i, _ in parts}) < total:
            return f"Incomplete shard set: {len(parts)} of {total} {stem}-*.{ext} files present"
    return None


def check_lfs(mf: ModelFiles) -> str | None:
    pointers = mf.lfs_pointers()
    if pointers:
        return f"LFS pointers instead of files: {_names(pointers)}"
    return None


def check_unfinished(mf: ModelFiles) -> str | None:
    """A ``.partial``/``.tmp`` file is a download that stopped: the likeliest cause of whatever
    else is wrong (a missing shard, a missing config), so it is reported first, by name."""
    left = mf.unfinished()
    if left:
        return f"Interrupted download: unfinished file(s) {_names(left)} (download the model again)"
    return None


def check_download(mf: ModelFiles, repo: CachedRepo | None, snapshot: Snapshot | None) -> str | None:
    broken = [f for f in sorted(mf.files.values(), key=lambda f: f.name) if f.broken]
    if broken:
        return f"Interrupted download: blob missing for {_names(broken)}"
    if repo is None:
        return None
    partial = incomplete_blobs(repo)
    if partial:
        return f"Interrupted download: {len(partial)} incomplete file(s) in the cache (run pull again to resume)"
    if snapshot is not None:
        listed = _tree_listing(repo.path, snapshot.commit)
        if listed:
            missing = sorted(name for name in listed if name not in mf.files)
            if missing:
                return "Interrupted download: missing " + ", ".join(missing[:3]) + (
                    f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
                )
            short = sorted(n for n, size in listed.items() if size is not None and mf.files[n].size != size)
            if short:
                return "Interrupted download: size mismatch for " + ", ".join(short[:3])
    return None


def _tree_listing(repo_path: Path, commit: str) -> dict[str, int | None]:
    """huggingface_hub's record of a commit's files (``trees/<commit>.json``), if it kept one."""
    try:
        data = json.loads((repo_path / "trees" / f"{commit}.json").read_text(encoding="utf-8"))
        return {name: info.get("size") for name, info in data["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def check_json_files(mf: ModelFiles) -> str | None:
    for name in JSON_FILES:
        problem = mf.json_problem(name)
        if problem:
            return problem
    return None


def check_tokenizer(mf: ModelFiles) -> str | None:
    if "tokenizer_config.json" not in mf.files:
        return None
    candidates = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model", "tekken.json")
    if any(mf.has(c) for c in candidates) or any(n.endswith(".tiktoken") for n in mf.files):
        return None
    return "Tokenizer files missing: tokenizer_config.json present but no tokenizer.json or tokenizer.model"


def check_vision(mf: ModelFiles) -> str | None:
    cfg = mf.config
    if not is_vision_model(cfg) or any(mf.has(name) for name in PREPROCESSOR_FILES):
        return None
    return (f"Vision model ({cfg.get('model_type')}) without preprocessor_config.json: "  # type: ignore[union-attr]
            "images cannot be prepared for it")


def check_gguf_header(mf: ModelFiles) -> str | None:
    if mf.gguf_meta is None:
        return f"{mf.gguf_files[0].name} has no readable GGUF header"
    return None


def _checks(mf: ModelFiles, gguf: bool, repo: CachedRepo | None, snapshot: Snapshot | None) -> list:
    """The checks in the order their problems are reported (GGUF files carry config and tokenizer)."""
    whole = [
        lambda: check_unfinished(mf),
        lambda: check_weights(mf, gguf),
        lambda: check_shards(mf),
        lambda: check_lfs(mf),
        lambda: check_download(mf, repo, snapshot),
    ]
    if gguf:
        return [*whole, lambda: check_gguf_header(mf)]
    return [whole[0], lambda: check_config(mf), *whole[1:], lambda: check_json_files(mf), lambda: check_tokenizer(mf),
            lambda: check_vision(mf)]


def file_problems(mf: ModelFiles, gguf: bool) -> list[str]:
    """Every problem of a folder's files (a workspace: no cache state), in report order."""
    return [problem for check in _checks(mf, gguf, None, None) if (problem := check())]


def integrity(
    mf: ModelFiles, gguf: bool, repo: CachedRepo | None = None, snapshot: Snapshot | None = None
) -> str | None:
    """The first integrity problem, or None when the files are whole."""
    if repo is not None and snapshot is None:
        return "No snapshot in cache (download never completed)"
    if not mf.root.is_dir():
        return "Model folder missing"
    for check in _checks(mf, gguf, repo, snapshot):
        problem = check()
        if problem:
            if problem.startswith("No model weights"):
                # weights absent because a download stopped half-way: say that, it tells what to do
                return check_download(mf, repo, snapshot) or problem
            return problem
    return None
