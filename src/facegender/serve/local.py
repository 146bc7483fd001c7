"""Start ``facegender serve`` in a child process on a free loopback port and wait until it answers.

The browser test and the load benchmark talk to the real server this way (uvicorn, lifespan,
worker process and all), not to an in-process app.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class LocalServer:
    """``with LocalServer(model=...) as srv: srv.url``; the child is stopped on exit."""

    def __init__(
        self,
        model: str | Path | None = None,
        workers: int = 1,
        extra_args: list[str] | None = None,
        startup_timeout: float = 300.0,
    ):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        args = [sys.executable, "-m", "facegender", "serve", "--host", HOST]
        args += ["--port", str(self.port), "--workers", str(workers)]
        if model is not None:
            args += ["--model", str(model)]
        self.args = args + list(extra_args or [])
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        # The log file lives as long as this object, so no context manager here.
        self._log = tempfile.NamedTemporaryFile(prefix="facegender-serve-", suffix=".log")  # noqa: SIM115

    def __enter__(self) -> LocalServer:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"server not up after {self.startup_timeout:.0f} s:\n{self.log()}")

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
