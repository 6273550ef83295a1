"""A real ``redis-server`` on 127.0.0.1 for tests and benchmarks: no persistence, a free port.

Debian's redis-server (scripts/install-test-tools.sh installs it). ``kill`` and ``start``
again on the same port play an outage and a restart: the restarted server is empty, as a
Memorystore basic instance is after a failure.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from harness.processes import _stop_group, free_port
from harness.running import Running

__all__ = ["REDIS_SERVER", "RedisServer", "redis_server_missing"]
REDIS_SERVER = "redis-server"


def redis_server_missing() -> str | None:
    """Why no Redis server can be started here, or None when one can."""
    if shutil.which(REDIS_SERVER) is None:
        return (
            "redis-server is not installed (make test installs it: scripts/install-test-tools.sh)"
        )
    return None


class RedisServer(Running):
    """One redis-server process; its output goes to ``log_path``."""

    def __init__(self, log_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """redis://127.0.0.1:<port>/0"""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Spawn it and return once it accepts connections."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    *(REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--daemonize", "no"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited early:\n{self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"redis-server did not listen within {timeout}s")

    def kill(self) -> None:
        """SIGKILL it, as a crash would: clients see their connections drop."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL)."""
        if self.process is not None:
            _stop_group(self.process)
            self.process = None
