"""A real ``redis-server`` on 127.0.0.1 for tests and benchmarks: no persistence, a free port.

Debian's redis-server (scripts/install-test-tools.sh installs it). ``kill`` and ``start``
again on the same port play an outage and a restart: the restarted server is empty, as a
Memorystore basic instance is after a failure. With ``tls`` (a certificate and its key, PEM
files) it speaks TLS only, as Memorystore does with in-transit encryption.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from harness.processes import free_port, stop_group, wait_listening
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

    def __init__(
        self, log_path: Path, port: int | None = None, tls: tuple[Path, Path] | None = None
    ) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.tls = tls
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """redis://127.0.0.1:<port>/0 (rediss:// with TLS)"""
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Spawn it and return once it accepts connections."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        listen = ("--port", str(self.port))
        if self.tls:
            cert, key = self.tls
            listen = ("--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no")
            listen += ("--tls-cert-file", str(cert), "--tls-key-file", str(key))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    *(REDIS_SERVER, *listen, "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--daemonize", "no"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_listening(self.process, self.port, timeout, "redis-server", self.log_path.read_text)
        return self

    def kill(self) -> None:
        """SIGKILL it, as a crash would: clients see their connections drop."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL)."""
        if self.process is not None:
            stop_group(self.process)
            self.process = None
