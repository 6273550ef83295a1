"""Pytest fixtures for the fake Google services and a real Redis (tests/conftest.py loads it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from harness.fake_gcs import FakeGCSServer
from harness.fake_gemini import FakeGemini
from harness.redis import RedisServer, redis_server_missing


@pytest.fixture
def fake_gemini() -> Iterator[FakeGemini]:
    """A fresh fake Gemini server for one test; pass ``fake_gemini.url`` as GEMINI_BASE_URL."""
    with FakeGemini() as fake:
        yield fake


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGCSServer]:
    """One fake-gcs-server process (in-memory) shared by the whole session."""
    log_file = tmp_path_factory.mktemp("fake-gcs") / "fake-gcs-server.log"
    with FakeGCSServer(log_file=log_file) as server:
        yield server


@pytest.fixture
def gcs_bucket(fake_gcs: FakeGCSServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty bucket on the fake server, with STORAGE_EMULATOR_HOST pointing at it."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    fake_gcs.create_bucket(name)
    for key, value in fake_gcs.env().items():
        monkeypatch.setenv(key, value)
    return name


def _redis_server(tmp_path: Path, tls: tuple[Path, Path] | None = None) -> Iterator[RedisServer]:
    missing = redis_server_missing()
    if missing is not None:
        pytest.skip(missing)
    with RedisServer(tmp_path / "redis.log", tls=tls) as server:
        yield server


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh, empty redis-server for one test (skipped, saying why, without the binary)."""
    yield from _redis_server(tmp_path)


@pytest.fixture
def redis_ca() -> trustme.CA:
    """A certificate authority of the test's own."""
    return trustme.CA()


@pytest.fixture
def tls_redis_server(tmp_path: Path, redis_ca: trustme.CA) -> Iterator[RedisServer]:
    """A redis-server speaking TLS only, its certificate for 127.0.0.1 (Memorystore is reached
    by IP) issued by ``redis_ca``."""
    served = redis_ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    served.cert_chain_pems[0].write_to_path(cert)
    served.private_key_pem.write_to_path(key)
    yield from _redis_server(tmp_path, tls=(cert, key))
