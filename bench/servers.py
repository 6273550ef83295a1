"""Processes the benchmarks talk to, all on 127.0.0.1, and a keep-alive HTTP client.

``ChatServer`` is a real ``functions-framework`` process (gunicorn underneath) serving
functions/chat/main.py, or any other source; ``FakeGeminiProcess`` is the fake Gemini API
in its own process, so its threads do not share the load generator's GIL; fake-gcs-server
comes from tests/fakes/fake_gcs.py. Every process is started in its own session and
stopped by its own process group id in ``stop()``; callers use them as context managers.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from chatbot.config import ENVIRONMENT_VARIABLES
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CHAT_SOURCE = ROOT / "functions" / "chat" / "main.py"
UNLIMITED = "1000000/minute"

# Every variable chatbot.config reads: a benchmark process starts from none of them, so a
# developer's own GOOGLE_API_KEY or SNAPSHOT_URI cannot leak into a measurement.
CONFIG_VARS = (*ENVIRONMENT_VARIABLES, "STORAGE_EMULATOR_HOST", "WORKERS", "THREADS")


def child_env(**overrides: str | int | float) -> dict[str, str]:
    """A clean environment for a benchmark child process, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
    env.update(
        PYTHONPATH=str(ROOT),
        ORT_DISABLE_TELEMETRY="1",
        ANONYMIZED_TELEMETRY="False",
        PYTHONDONTWRITEBYTECODE="1",
        RATE_LIMIT_CHAT=UNLIMITED,
        RATE_LIMIT_INFO=UNLIMITED,
        RATE_LIMIT_STATS=UNLIMITED,
    )
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def _stop_group(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process group we created for ``process``, SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def descendants(pid: int) -> list[int]:
    """``pid`` and all its live descendants (gunicorn's arbiter forks its workers)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            tasks = Path(f"/proc/{current}/task").iterdir()
            for task in tasks:
                children = (task / "children").read_text().split()
                todo.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return out


class ChatServer:
    """A functions-framework process serving the chat function (or another target)."""

    def __init__(
        self,
        env: dict[str, str],
        log_file: Path,
        *,
        source: Path = CHAT_SOURCE,
        target: str = "chat",
    ) -> None:
        self.port = free_port()
        self.env = {**env, "PORT": str(self.port)}
        self.log_file = log_file
        self.source = source
        self.target = target
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self) -> ChatServer:
        """Spawn the process; ``started_at`` is the perf_counter just before the spawn."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.started_at = time.perf_counter()
            self.process = subprocess.Popen(
                [
                    str(VENV_BIN / "functions-framework"),
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
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        return self

    def wait_up(self, timeout: float = 60.0) -> float:
        """Poll until the server answers any HTTP request; returns seconds since the spawn."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"chat server exited early; see {self.log_file}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/health-probe-404")
                conn.getresponse().read()
                conn.close()
                return time.perf_counter() - self.started_at
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"chat server did not listen within {timeout}s; see {self.log_file}")

    def client(self, timeout: float = 120.0) -> HttpClient:
        """A keep-alive client for this server."""
        return HttpClient(self.port, timeout)

    def pids(self) -> list[int]:
        """The arbiter and its workers."""
        return descendants(self.process.pid) if self.process else []

    def stop(self) -> None:
        """Stop the arbiter and its workers."""
        if self.process is not None:
            _stop_group(self.process)
            self.process = None

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class FakeGeminiProcess:
    """``python -m tests.fakes.fake_gemini`` in its own process."""

    def __init__(self, failure_rate: float = 0.0, delay: float = 0.0, seed: int = 7) -> None:
        self.args = ["--failure-rate", str(failure_rate), "--delay", str(delay)]
        self.args += ["--seed", str(seed)]
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> FakeGeminiProcess:
        """Spawn it on a free port and read its URL from its first line."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.fake_gemini", "--port", "0", *self.args],
            env=child_env(),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"fake Gemini did not start: {line!r}")
        self.url = line.removeprefix("listening on ")
        return self

    def stop(self) -> None:
        if self.process is not None:
            _stop_group(self.process)
            self.process = None

    def __enter__(self) -> FakeGeminiProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class HttpClient:
    """One persistent HTTP/1.1 connection, so connection set-up is not measured."""

    def __init__(self, port: int, timeout: float = 120.0) -> None:
        self.port = port
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            self._conn.connect()
            self._conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._conn

    def request(
        self, method: str, path: str, body: dict | None = None
    ) -> tuple[int, dict, dict | None, float]:
        """(status, headers, JSON body or None, seconds); reconnects once if the server closed."""
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in range(2):
            conn = self._connection()
            t0 = time.perf_counter()
            try:
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                raw = response.read()
            except (http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine):
                self.close()
                if attempt:
                    raise
                continue
            elapsed = time.perf_counter() - t0
            try:
                data = json.loads(raw) if raw else None
            except ValueError:
                data = None
            if response.getheader("Connection", "").lower() == "close":
                self.close()
            return response.status, dict(response.getheaders()), data, elapsed
        raise AssertionError("unreachable")

    def chat(self, message: str, use_cache: bool = True) -> tuple[int, dict, dict | None, float]:
        """POST /chat."""
        return self.request("POST", "/chat", {"message": message, "use_cache": use_cache})

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
