"""Pytest fixtures for the fake Google services; registered in tests/conftest.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from harness.fake_gcs import FakeGCSServer
from harness.fake_gemini import FakeGemini


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
