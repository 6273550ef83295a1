"""Shared fixtures: a clean environment per test, one real snapshot built per session, and the
functions built from Settings and served in-process the way functions-framework serves them."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

import flask
import functions_framework
import pytest
from hypothesis import HealthCheck, settings

from chatbot.answering.embeddings import OnnxEmbedder
from chatbot.bucket.storage import LocalStorage
from chatbot.config import Settings
from chatbot.web import FunctionApp, create_admin_app, create_chat_app
from harness.processes import ADMIN_SOURCE, CHAT_SOURCE, CONFIG_VARS, ROOT

# Property tests run the same examples every time (a CI failure reproduces locally) and never
# fail for being slow: the suite shares 2 cores with real servers, and mutmut traces each call.
settings.register_profile(
    "romega",
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("romega")

pytest_plugins = ["tests.fixtures"]

KNOWLEDGE = ROOT / "knowledge"
BACKGROUND_THREADS = {"snapshot-poll", "embedder-warm-up"}
__all__ = ["ADMIN_SOURCE", "CHAT_SOURCE", "KNOWLEDGE", "ROOT", "serve"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """Each test starts from the embedded defaults, with its own snapshot directory."""
    for name in CONFIG_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SNAPSHOT_DIR", str(tmp_path / "snapshots"))
    monkeypatch.setenv("ORT_DISABLE_TELEMETRY", "1")
    yield
    # A request may have started a background poll or model warm-up; let it end inside its
    # own test, not in the next one's or during interpreter shutdown (C++ threads abort then).
    for thread in threading.enumerate():
        if thread.name in BACKGROUND_THREADS:
            thread.join(timeout=30)


def serve(function: FunctionApp) -> flask.Flask:
    """``function`` mounted as functions-framework mounts an HTTP function in main.py.

    Every path and method reaches it, and the framework's own 404s (/robots.txt, paths its
    URL rules cannot match) go to ``not_found``, as main.py's errorhandler sends them.
    """
    app = flask.Flask(f"test-{id(function)}")
    functions_framework._configure_app(app, function, "http")
    app.register_error_handler(404, function.not_found)
    app.function = function  # type: ignore[attr-defined] - lets a test reach the service
    return app


@pytest.fixture(scope="session")
def embedder() -> OnnxEmbedder:
    return OnnxEmbedder()


@pytest.fixture(scope="session")
def built_snapshot(tmp_path_factory, embedder):
    """The sample knowledge base built once per session (real chunker, model, Chroma).

    With ROMEGA_TEST_SNAPSHOT_CACHE set to a folder, built once into it and loaded from it
    by later sessions: `make mutation` sets it, as every mutant's run is a session of its own
    and the build takes seconds (scripts/mutation.py).
    """
    from chatbot.bucket.publishing import BuiltSnapshot
    from indexer.build import build_from_folder

    cache = os.environ.get("ROMEGA_TEST_SNAPSHOT_CACHE")
    if not cache:
        return build_from_folder(
            KNOWLEDGE, embedder, tmp_path_factory.mktemp("built"), progress=False
        )
    kept = Path(cache)
    if not kept.is_dir():
        kept.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".built-", dir=kept.parent))
        build_from_folder(KNOWLEDGE, embedder, staging, progress=False)
        try:
            staging.rename(kept)  # whole or not at all; another session may have won
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    (archive,) = kept.glob("*.tar.zst")
    return BuiltSnapshot.load(archive)


@pytest.fixture
def bucket(tmp_path, built_snapshot) -> LocalStorage:
    """A local-folder bucket with the sample snapshot published as LATEST."""
    from chatbot.bucket.publishing import publish

    storage = LocalStorage(tmp_path / "bucket")
    publish(storage, built_snapshot)
    return storage


@pytest.fixture
def settings_for(tmp_path, bucket):
    """Settings as Settings.from_env reads them, serving ``bucket`` unless told otherwise."""

    def make(**env: object) -> Settings:
        values = {"SNAPSHOT_URI": bucket.uri, "SNAPSHOT_DIR": str(tmp_path / "snapshots")}
        values.update({key: str(value) for key, value in env.items()})
        return Settings.from_env(values)

    return make


@pytest.fixture
def chat_client(settings_for):
    """A test client of the chat function built from Settings (env-style overrides)."""
    from tests.openapi_check import OpenApiClient

    def make(**env: object):
        app = serve(create_chat_app(settings_for(**env)))
        app.test_client_class = OpenApiClient  # every response is held to the OpenAPI document
        return app.test_client()

    return make


@pytest.fixture
def admin_app(settings_for):
    """The admin function built from Settings (env-style overrides), served in-process."""

    def make(**env: object) -> flask.Flask:
        return serve(create_admin_app(settings_for(**env)))

    return make


os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
