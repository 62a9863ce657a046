"""Prefix KV cache: RAM (mlx-lm's LRUPromptCache) in front of a disk store.

Disk snapshots are written only where a later request can start from them: the end of a
shared system prompt and the end of a conversation so far (the next turn begins with it);
a finished answer stays in RAM. A snapshot whose tokens begin a snapshot already on disk
is not written again: a lookup loads the snapshot with the longest common prefix and
trims it (KV caches trim), so the longer file serves the shorter prefix too.

Disk snapshots are files in mlx-lm's ``save_prompt_cache`` format (safetensors; the
cache classes and scalars in the metadata, loadable with ``load_prompt_cache``), named
by a hash of the model fingerprint and the token prefix. The tokens themselves are in
the metadata (``mlxk_tokens``) so a load is verified before use; a file that does not
parse or does not match is removed. Writes go to a temporary name and are renamed into
place. Disk reads and writes run on an I/O thread: the engine thread only copies arrays
to and from host memory, so disk latency never stalls a decode step.

Threading: every method is called on the engine thread except the ``_io_*`` helpers,
which run on the I/O thread and never touch MLX.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxk.engine.prompting import common_prefix
from mlxk.store.cache import mlxk_cache_dir

log = logging.getLogger("mlxk.prefix_cache")

DEFAULT_DISK_BYTES = 4 << 30
DEFAULT_RAM_BYTES = 1 << 30
MIN_TOKENS = 16  # shorter prefixes are cheaper to recompute than to store
SUFFIX = ".safetensors"


def default_dir() -> Path:
    return mlxk_cache_dir() / "prefix-cache"


@dataclass
class DiskEntry:
    path: Path
    model: str
    ntokens: int
    size: int
    used: float
    tokens: tuple[int, ...] = ()


def _read_header(path: Path) -> dict:
    """The safetensors header; raises ValueError when the file is truncated or not safetensors."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError("short file")
        (n,) = struct.unpack("<Q", raw)
        if n <= 0 or n > 100 << 20 or 8 + n > size:
            raise ValueError("bad header length")
        header = json.loads(f.read(n))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        raise ValueError("size does not match the header")
    return header


class PendingLoad:
    """A disk snapshot being read on the I/O thread."""

    def __init__(self, future: Future, entry: DiskEntry, tokens: list[int]):
        self.future, self.entry, self.tokens = future, entry, tokens

    def done(self) -> bool:
        return self.future.done()


class PrefixCache:
    def __init__(self, disk_dir: Path | None, disk_bytes: int = DEFAULT_DISK_BYTES, ram_bytes: int = DEFAULT_RAM_BYTES):
        from mlx_lm.models.cache import LRUPromptCache

        self.ram = LRUPromptCache(max_size=64, max_bytes=ram_bytes)
        self.disk_dir = disk_dir
        self.disk_bytes_max = disk_bytes
        self._disk: dict[str, DiskEntry] = {}  # file stem -> entry
        self._lock = threading.Lock()
        self._io = ThreadPoolExecutor(1, thread_name_prefix="mlxk-prefix-io")
        self._fingerprints: dict[str, str] = {}
        self._pending_writes: list[Future] = []
        self.disk_hits = self.ram_hits = self.misses = self.corrupt = 0
        self.bytes_written = self.files_written = 0
        if disk_dir is not None:
            disk_dir.mkdir(parents=True, exist_ok=True)
            self._scan()

    @classmethod
    def from_options(cls, disk_dir: str | None, disk_bytes: int | None) -> "PrefixCache":
        return cls(Path(disk_dir).expanduser() if disk_dir else default_dir(), disk_bytes or DEFAULT_DISK_BYTES)

    # --- stats ---------------------------------------------------------------------

    @property
    def disk_files(self) -> int:
        with self._lock:
            return len(self._disk)

    @property
    def disk_bytes(self) -> int:
        with self._lock:
            return sum(e.size for e in self._disk.values())

    # --- identity ----------------------------------------------------------------------

    def fingerprint(self, model_key: str) -> str:
        fp = self._fingerprints.get(model_key)
        if fp is None:
            h = hashlib.sha256()
            root = Path(model_key)
            for f in sorted(root.glob("*")):
                if f.suffix in (".json", ".safetensors", ".model", ".jinja"):
                    st = f.stat()
                    h.update(f"{f.name}:{st.st_size}".encode())
                    if f.name == "config.json":
                        h.update(f.read_bytes())
            fp = self._fingerprints[model_key] = h.hexdigest()[:24]
        return fp

    @staticmethod
    def _stem(fp: str, tokens: list[int]) -> str:
        h = hashlib.sha256(fp.encode())
        h.update(struct.pack(f"<{len(tokens)}q", *tokens))
        return h.hexdigest()[:40]

    # --- disk index ----------------------------------------------------------------------

    def _scan(self) -> None:
        for path in self.disk_dir.glob("*" + SUFFIX):
            if path.name.startswith("tmp-"):
                path.unlink(missing_ok=True)
                continue
            try:
                meta = _read_header(path).get("__metadata__") or {}
                model, ntok = meta["0.mlxk_model"], int(meta["0.mlxk_ntokens"])
                tokens = tuple(json.loads(meta["0.mlxk_tokens"]))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("removing unreadable prefix snapshot %s: %s", path.name, exc)
                self.corrupt += 1
                path.unlink(missing_ok=True)
                continue
            st = path.stat()
            self._disk[path.stem] = DiskEntry(path, model, ntok, st.st_size, st.st_mtime, tokens)

    def _disk_candidate(self, fp: str, prompt: list[int], longer_than: int) -> DiskEntry | None:
        """The snapshot sharing the longest prefix with ``prompt`` (> longer_than tokens)."""
        head = tuple(prompt[:MIN_TOKENS])
        best, best_len = None, max(longer_than, MIN_TOKENS - 1)
        with self._lock:
            entries = [e for e in self._disk.values() if e.model == fp and e.tokens[:MIN_TOKENS] == head]
        for e in entries:
            n = common_prefix(e.tokens, prompt)
            if n > best_len or (n == best_len and best is not None and e.ntokens < best.ntokens):
                best, best_len = e, n
        return best

    def _covered_locked(self, fp: str, tokens: list[int]) -> bool:
        """A snapshot on disk begins with ``tokens``: it serves them (trimmed)."""
        n, t = len(tokens), tuple(tokens)
        return any(e.model == fp and e.ntokens >= n and e.tokens[:n] == t for e in self._disk.values())

    # --- engine API ------------------------------------------------------------------------

    def fetch(self, model_key: str, prompt: list[int]):
        """(cache, cached_tokens) from RAM, or a PendingLoad when a longer prefix is on disk."""
        cache, rest = self.ram.fetch_nearest_cache(model_key, prompt)
        cached = len(prompt) - len(rest) if cache is not None else 0
        if self.disk_dir is not None:
            entry = self._disk_candidate(self.fingerprint(model_key), prompt, max(cached, MIN_TOKENS - 1))
            if entry is not None:
                fut = self._io.submit(self._io_read, entry.path)
                return PendingLoad(fut, entry, list(entry.tokens))
        return self._usable(cache, cached, prompt)

    def finish_load(self, pending: PendingLoad, model_key: str, prompt: list[int]):
        """Build the cache from a finished disk read (engine thread).

        A snapshot that fails verification is removed and the lookup starts again, so the
        answer may be another PendingLoad (a shorter snapshot on disk)."""
        try:
            arrays, meta = pending.future.result()
            if meta.get("0.mlxk_model") != self.fingerprint(model_key) or \
                    json.loads(meta.get("0.mlxk_tokens", "null")) != pending.tokens:
                raise ValueError("tokens or model do not match")
            cache = _build_cache(arrays, meta)
            pending.entry.used = time.time()
            self.disk_hits += 1
            self.ram.insert_cache(model_key, list(pending.tokens), cache, cache_type="system")
            cache, rest = self.ram.fetch_nearest_cache(model_key, prompt)
            return self._usable(cache, len(prompt) - len(rest), prompt)
        except Exception as exc:
            log.warning("prefix snapshot %s is unusable (%s): removed", pending.entry.path.name, exc)
            self.corrupt += 1
            with self._lock:
                self._disk.pop(pending.entry.path.stem, None)
            pending.entry.path.unlink(missing_ok=True)
            return self.fetch(model_key, prompt)  # the next shorter snapshot, or RAM, or nothing

    def _usable(self, cache, cached: int, prompt: list[int]):
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        if cache is None or cached <= 0:
            self.misses += 1
            return None, 0
        if cached >= len(prompt):  # the model must see at least one prompt token
            if not can_trim_prompt_cache(cache):
                self.misses += 1
                return None, 0
            trim_prompt_cache(cache, cached - len(prompt) + 1)
            cached = len(prompt) - 1
        self.ram_hits += 1
        return cache, cached

    def segments(self, prompt: list[int], cached: int, boundaries: list[int]) -> list[list[int]]:
        """The uncached prompt split at snapshot boundaries (end of system prompt, of user turns)."""
        cuts = sorted({b for b in boundaries if cached < b < len(prompt) and b >= MIN_TOKENS})
        out, start = [], cached
        for b in cuts:
            out.append(prompt[start:b])
            start = b
        out.append(prompt[start:])
        return out

    def store(self, model_key: str, tokens: list[int], cache: list[Any], kind: str = "assistant",
              to_disk: bool = False) -> None:
        """Keep ``cache`` for ``tokens`` in RAM; ``to_disk`` for a boundary a later request starts from."""
        if len(tokens) < MIN_TOKENS:
            return
        import mlx.core as mx

        # mlx-lm's extract() is a lazy contiguous copy of one row of the batch's KV buffers:
        # kept unevaluated, each snapshot would hold the whole batch's buffers alive.
        mx.eval([c.state for c in cache])
        self.ram.insert_cache(model_key, list(tokens), cache, cache_type=kind)
        if self.disk_dir is None or not to_disk:
            return
        fp = self.fingerprint(model_key)
        stem = self._stem(fp, tokens)
        with self._lock:
            if stem in self._disk:
                self._disk[stem].used = time.time()
                return
            if self._covered_locked(fp, tokens):
                return
        try:
            payload = _serialize(cache, {"mlxk_model": fp, "mlxk_ntokens": str(len(tokens)),
                                         "mlxk_tokens": json.dumps(list(tokens))})
        except Exception as exc:  # e.g. a cache type that cannot be serialized
            log.debug("not snapshotting: %s", exc)
            return
        self._pending_writes = [f for f in self._pending_writes if not f.done()]
        self._pending_writes.append(self._io.submit(self._io_write, stem, fp, tuple(tokens), payload))

    def drop_ram(self) -> None:
        from mlx_lm.models.cache import LRUPromptCache

        self.ram = LRUPromptCache(max_size=self.ram.max_size, max_bytes=self.ram.max_bytes)

    def flush(self, timeout: float = 2.0) -> None:
        deadline = time.time() + timeout
        for f in list(self._pending_writes):
            try:
                f.result(max(0.0, deadline - time.time()))
            except Exception:
                pass

    def close(self) -> None:
        self.flush()
        self._io.shutdown(wait=False, cancel_futures=True)

    # --- I/O thread ----------------------------------------------------------------------------

    def _io_write(self, stem: str, fp: str, tokens: tuple[int, ...], payload) -> None:
        from safetensors.numpy import save_file

        arrays, meta = payload
        meta = {**meta, "0.mlxk_sha256": _digest(arrays)}
        final = self.disk_dir / (stem + SUFFIX)
        tmp = self.disk_dir / f"tmp-{uuid.uuid4().hex}{SUFFIX}"
        try:
            save_file(arrays, str(tmp), metadata=meta)
            os.replace(tmp, final)
        except OSError as exc:
            log.warning("prefix snapshot write failed: %s", exc)
            tmp.unlink(missing_ok=True)
            return
        size = final.stat().st_size
        with self._lock:
            self._disk[stem] = DiskEntry(final, fp, len(tokens), size, time.time(), tokens)
            self.bytes_written += size
            self.files_written += 1
            self._evict_locked()

    def _evict_locked(self) -> None:
        total = sum(e.size for e in self._disk.values())
        for stem, e in sorted(self._disk.items(), key=lambda kv: kv[1].used):
            if total <= self.disk_bytes_max:
                break
            e.path.unlink(missing_ok=True)
            total -= e.size
            del self._disk[stem]

    @staticmethod
    def _io_read(path: Path):
        from safetensors import safe_open

        _read_header(path)
        arrays = {}
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            for k in f.keys():
                arrays[k] = f.get_tensor(k)
        if meta.get("0.mlxk_sha256") != _digest(arrays):
            raise ValueError("checksum mismatch")
        return arrays, meta


def _digest(arrays: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        h.update(k.encode())
        h.update(arrays[k].tobytes())
    return h.hexdigest()


def _serialize(cache: list[Any], metadata: dict[str, str]):
    """mlx-lm's save_prompt_cache layout, as host (numpy) arrays for the I/O thread."""
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten

    scalars: list = [""]

    def map_data(item):
        i, data = item
        if isinstance(data, mx.array):
            return item
        if isinstance(data, (int, float, bool)):
            scalars.append((i, "scalar"))
            return (i, mx.array(data))
        if isinstance(data, str):
            scalars.append((i, "string"))
            return (i, mx.array([ord(c) for c in data]))
        if data is None:
            scalars.append((i, "none"))
            return (i, mx.array([]))
        raise ValueError(f"Model state is not serializable: {data}")

    data = dict(map(map_data, tree_flatten([c.state for c in cache])))
    if any(v.dtype == mx.bfloat16 for v in data.values()):
        raise ValueError("bfloat16 caches are kept in RAM only")
    mx.eval(list(data.values()))
    arrays = {k: np.array(v) for k, v in data.items()}
    meta = dict(tree_flatten([metadata, [type(c).__name__ for c in cache], scalars]))
    return arrays, {k: str(v) for k, v in meta.items()}


def _build_cache(arrays: dict, meta: dict) -> list[Any]:
    """mlx-lm's load_prompt_cache, from host arrays already read from disk."""
    import mlx.core as mx
    from mlx.utils import tree_unflatten
    from mlx_lm.models import cache as cache_mod

    arrays = {k: mx.array(v) for k, v in arrays.items()}
    metadata, classes, scalars = tree_unflatten(list(meta.items()))
    for pos, kind in scalars[1:]:
        a = arrays[pos]
        if kind == "scalar":
            arrays[pos] = a.item()
        elif kind == "string":
            arrays[pos] = "".join(chr(i) for i in a.tolist())
        elif kind == "none":
            arrays[pos] = None
    tree = tree_unflatten(list(arrays.items()))
    return [getattr(cache_mod, c).from_state(state) for c, state in zip(classes, tree)]
