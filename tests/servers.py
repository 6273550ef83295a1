"""Real functions-framework processes on loopback for system tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_FRAMEWORK = Path(sys.executable).parent / "functions-framework"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FunctionProcess:
    """One `functions-framework` process serving a function; its output goes to a log file."""

    def __init__(
        self,
        target: str,
        source: Path,
        env: dict[str, str],
        log_path: Path,
        port: int | None = None,
        cwd: Path = ROOT,
    ) -> None:
        self.target = target
        self.cwd = cwd
        self.source = source
        self.port = port or free_port()
        self.log_path = log_path
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in env},
            "PYTHONPATH": str(ROOT),
            "ORT_DISABLE_TELEMETRY": "1",
            **env,
        }
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> FunctionProcess:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                str(FUNCTIONS_FRAMEWORK),
                "--target",
                self.target,
                "--source",
                str(self.source),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.target} exited early:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.target} did not listen within {timeout}s:\n{self.log()}")

    def wait_healthy(self, timeout: float = 60.0) -> dict:
        """Poll /health until it answers 200 (the first request restores the snapshot)."""
        import json

        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=30) as resp:
                    return json.load(resp)
            except Exception as exc:  # noqa: BLE001 - 503 while loading, or not up yet
                last = exc
                time.sleep(0.2)
        raise RuntimeError(f"{self.target} never became healthy: {last}\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> FunctionProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def request(
    method: str,
    url: str,
    body: dict | None = None,
    headers: dict | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of one HTTP request, errors included."""
    import json
    import urllib.error

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={
            **({"Content-Type": "application/json"} if data is not None else {}),
            **(headers or {}),
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, status, hdrs = resp.read(), resp.status, dict(resp.headers)
    except urllib.error.HTTPError as err:
        raw, status, hdrs = err.read(), err.code, dict(err.headers)
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        parsed = {"_raw": raw.decode(errors="replace")}
    return status, parsed, hdrs
