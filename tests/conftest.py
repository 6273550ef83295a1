"""Shared fixtures: a clean environment per test, one real snapshot built per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from chatbot.config import ENVIRONMENT_VARIABLES
from chatbot.embeddings import OnnxEmbedder
from chatbot.storage import LocalStorage

pytest_plugins = ["tests.fakes.fixtures"]

ROOT = Path(__file__).resolve().parent.parent
KNOWLEDGE = ROOT / "knowledge"
CHAT_SOURCE = ROOT / "functions" / "chat" / "main.py"
ADMIN_SOURCE = ROOT / "functions" / "admin" / "main.py"

# Every variable the functions read, and the emulator switch: tests start from none set.
CONFIG_VARS = [*ENVIRONMENT_VARIABLES, "STORAGE_EMULATOR_HOST"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """Each test starts from the embedded defaults, with its own snapshot directory."""
    for name in CONFIG_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SNAPSHOT_DIR", str(tmp_path / "snapshots"))
    monkeypatch.setenv("ORT_DISABLE_TELEMETRY", "1")
    yield
    sys.modules.pop("main", None)


@pytest.fixture(scope="session")
def embedder() -> OnnxEmbedder:
    return OnnxEmbedder()


@pytest.fixture(scope="session")
def built_snapshot(tmp_path_factory, embedder):
    """The sample knowledge base built once per session (real chunker, model, Chroma)."""
    from indexer.build import build_from_folder

    out = tmp_path_factory.mktemp("built")
    return build_from_folder(KNOWLEDGE, embedder, out, progress=False)


@pytest.fixture
def bucket(tmp_path, built_snapshot) -> LocalStorage:
    """A local-folder bucket with the sample snapshot published as LATEST."""
    from indexer.publish import publish

    storage = LocalStorage(tmp_path / "bucket")
    publish(storage, built_snapshot)
    return storage


@pytest.fixture
def chat_env(monkeypatch, bucket):
    """Environment for an in-process chat function serving the sample snapshot."""
    monkeypatch.setenv("SNAPSHOT_URI", bucket.uri)

    def set_env(**values):
        for key, value in values.items():
            monkeypatch.setenv(key, str(value))

    return set_env


@pytest.fixture
def chat_client(chat_env):
    """A test client of the real functions-framework app for functions/chat/main.py."""
    from functions_framework import create_app

    from tests.openapi_check import OpenApiClient

    def make(**env):
        chat_env(**env)
        app = create_app("chat", str(CHAT_SOURCE))
        app.test_client_class = OpenApiClient  # every response is held to the OpenAPI document
        return app.test_client()

    return make


def chat_module():
    """The functions/chat/main.py module the last create_app loaded."""
    return sys.modules["main"]


os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
