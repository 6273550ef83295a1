"""Real processes on 127.0.0.1 for system tests and benchmarks, and clients to talk to them.

``FunctionProcess`` is a real ``functions-framework`` process (gunicorn underneath) serving a
function's main.py; ``FakeGeminiProcess`` is the fake Gemini API in its own process, so its
threads do not share the caller's GIL; fake-gcs-server lives in harness/fake_gcs.py. Each
process starts in its own session and is stopped by its process group, workers included.
Children inherit the caller's environment: the tests' ``clean_env`` fixture and the
benchmarks' start-up remove every configuration variable from it first.
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
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from chatbot.config import ENVIRONMENT_VARIABLES
from harness.running import Running

__all__ = [
    "CHAT_SOURCE",
    "ADMIN_SOURCE",
    "CONFIG_VARS",
    "ROOT",
    "FakeGeminiProcess",
    "FunctionProcess",
    "HttpClient",
    "child_env",
    "free_port",
    "request",
]
ROOT = Path(__file__).resolve().parent.parent
CHAT_SOURCE = ROOT / "functions" / "chat" / "main.py"
ADMIN_SOURCE = ROOT / "functions" / "admin" / "main.py"
FUNCTIONS_FRAMEWORK = Path(sys.executable).parent / "functions-framework"
# Every variable the functions read, the emulator switch and gunicorn's sizing: tests and
# benchmarks start their children from none of them, so a developer's own GOOGLE_API_KEY
# or SNAPSHOT_URI cannot leak into a result.
CONFIG_VARS = (*ENVIRONMENT_VARIABLES, "STORAGE_EMULATOR_HOST", "WORKERS", "THREADS")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(**overrides: str | int | float) -> dict[str, str]:
    """This process's environment for a child, with the repository importable, plus overrides."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "ORT_DISABLE_TELEMETRY": "1",
        "ANONYMIZED_TELEMETRY": "False",
        **{key: str(value) for key, value in overrides.items()},
    }


def stop_group(process: subprocess.Popen, timeout: float = 10.0) -> None:
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


def wait_listening(
    process: subprocess.Popen, port: int, timeout: float, what: str, log: Callable[[], str]
) -> None:
    """Return once ``process`` accepts connections on ``port``; stop it if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.01)
    stop_group(process)
    raise RuntimeError(f"{what} did not listen within {timeout}s:\n{log()}")


def spawn_announced(command: list[str], what: str) -> tuple[subprocess.Popen, str]:
    """Spawn a server that prints ``listening on <url>`` first; (its process, that URL)."""
    process = subprocess.Popen(
        command,
        env=child_env(),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("listening on "):
        stop_group(process)
        raise RuntimeError(f"{what} did not start: {line!r}")
    return process, line.removeprefix("listening on ")


def descendants(pid: int) -> list[int]:
    """``pid`` and all its live descendants (gunicorn's arbiter forks its workers)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return out


class FunctionProcess(Running):
    """One ``functions-framework`` process serving a function; its output goes to a log file."""

    def __init__(
        self,
        target: str,
        source: Path,
        env: dict[str, str],
        log_path: Path,
        *,
        port: int | None = None,
        cwd: Path = ROOT,
    ) -> None:
        """``env`` overrides the inherited environment (see ``child_env``)."""
        self.target = target
        self.source = source
        self.port = port or free_port()
        self.log_path = log_path
        self.cwd = cwd
        self.env = {**child_env(**env), "PORT": str(self.port)}
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0  # perf_counter just before the spawn

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> FunctionProcess:
        """Spawn the process and return once it accepts connections."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.started_at = time.perf_counter()
            self.proc = subprocess.Popen(
                [
                    *(str(FUNCTIONS_FRAMEWORK), "--target", self.target),
                    *("--source", str(self.source), "--host", "127.0.0.1"),
                    *("--port", str(self.port)),
                ],
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_listening(self.proc, self.port, timeout, self.target, self.log)
        return self

    def wait_up(self, timeout: float = 60.0) -> float:
        """Poll until the server answers an HTTP request; returns seconds since the spawn."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"{self.target} exited early; see {self.log_path}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/health-probe-404")
                conn.getresponse().read()
                conn.close()
                return time.perf_counter() - self.started_at
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"{self.target} did not answer within {timeout}s; see {self.log_path}")

    def wait_healthy(self, timeout: float = 60.0) -> dict:
        """Poll /health until it answers 200 (the first request restores the snapshot)."""
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

    def client(self, timeout: float = 120.0) -> HttpClient:
        """A keep-alive client for this server."""
        return HttpClient(self.port, timeout)

    def pids(self) -> list[int]:
        """The arbiter and its workers."""
        return descendants(self.proc.pid) if self.proc else []

    def log(self) -> str:
        """Everything the process has written so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Stop the arbiter and its workers."""
        if self.proc is not None:
            stop_group(self.proc)


class FakeGeminiProcess(Running):
    """``python -m harness.fake_gemini`` in its own process."""

    def __init__(
        self,
        failure_rate: float = 0.0,
        delay: float = 0.0,
        seed: int = 7,
        *,
        first_chunk_delay: float = 0.0,
        chunk_delay: float = 0.0,
    ) -> None:
        """``first_chunk_delay`` and ``chunk_delay`` slow stream calls (``stream_delays``)."""
        self.args = ["--failure-rate", str(failure_rate), "--delay", str(delay)]
        self.args += ["--seed", str(seed)]
        self.args += ["--first-chunk-delay", str(first_chunk_delay)]
        self.args += ["--chunk-delay", str(chunk_delay)]
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> FakeGeminiProcess:
        """Spawn it on a free port and read its URL from its first line."""
        self.process, self.url = spawn_announced(
            [sys.executable, "-m", "harness.fake_gemini", "--port", "0", *self.args], "fake Gemini"
        )
        return self

    def stop(self) -> None:
        """Stop the process."""
        if self.process is not None:
            stop_group(self.process)
            self.process = None


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
        """Close the connection (the next request opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def request(
    method: str,
    url: str,
    body: dict | None = None,
    headers: dict | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of one HTTP request on a new connection, errors included."""
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
