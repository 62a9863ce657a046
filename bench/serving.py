"""A server under benchmark: a free port on 127.0.0.1, its log in a file, ready once /health
answers 200, stopped with SIGINT (then killed if it lingers). Shared by the serve benchmarks."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable

import httpx2 as httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``command(port)`` is the argv to run; ``name`` labels its log and error messages."""

    def __init__(self, command: Callable[[int], list[str]], log_dir: Path, *, name: str = "mlxk",
                 env: dict | None = None, ready_s: float = 300):
        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_dir) / f"{name}-{self.port}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(command(self.port), stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + ready_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{name} server exited {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(self.base + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise SystemExit(f"{name} server did not start in {ready_s:.0f} s; see {self.log_path}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def first_model_id(self, headers: dict | None = None) -> str:
        return httpx.get(self.base + "/v1/models", timeout=30, headers=headers).json()["data"][0]["id"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
