"""A chat instance following the bucket: hot swaps, draining, outages, cold-start retries."""

from __future__ import annotations

import logging
import time

import pytest

from chatbot.answering.cache import cache_key
from chatbot.answering.retrieval import KnowledgeIndex
from chatbot.answering.service import ChatService
from chatbot.bucket.control import EPOCH_KEY, bump_epoch
from chatbot.bucket.following import COLD_START_ATTEMPTS, COLD_START_BACKOFF, BucketFollower
from chatbot.bucket.layout import read_latest
from chatbot.bucket.serving import SnapshotServer
from chatbot.bucket.storage import LocalStorage
from chatbot.config import Settings
from chatbot.errors import NotReady, StorageError
from tests.publishing import point_latest, publish_copy

QUESTION = "What services do you offer?"


class Flaky(LocalStorage):
    """A local bucket that can be switched off: every call then fails as a network error would."""

    down = False
    calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise StorageError(f"{self.uri}: ConnectionError: connection refused")

    def read(self, key):
        self._check()
        return super().read(key)

    def download(self, key, dest):
        self._check()
        return super().download(key, dest)

    def write(self, key, data, *, if_generation_match=None):
        self._check()
        return super().write(key, data, if_generation_match=if_generation_match)

    def generation(self, key):
        self._check()
        return super().generation(key)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make_service(bucket, embedder, tmp_path):
    def make(storage=None) -> ChatService:
        # No background polls (each test polls explicitly), and every poll heartbeats.
        settings = Settings.from_env(
            {
                "SNAPSHOT_DIR": str(tmp_path / "snap"),
                "CONTROL_POLL_SECONDS": "3600",
                "HEARTBEAT_SECONDS": "0",
            }
        )
        return ChatService(settings, storage=storage or bucket, embedder=embedder)

    return make


def test_a_new_snapshot_is_swapped_in_and_the_old_deleted_after_its_last_request(
    make_service, bucket, built_snapshot, tmp_path
):
    service = make_service()
    v1 = service.chat(QUESTION).snapshot
    v2 = publish_copy(bucket, built_snapshot, v1 + "-v2", tmp_path / "v2")
    snap = tmp_path / "snap"
    with service.snapshots.lease() as draining:
        service.follower.poll()  # restores v2 beside v1 and swaps while v1 is in use
        assert service.snapshots.live.version == v2
        assert (snap / v1).is_dir() and (snap / v2).is_dir()
        assert draining.index.query(service.embedder.embed([QUESTION])[0], 2)  # v1 still works
    assert not (snap / v1).exists()
    assert service.chat(QUESTION).snapshot == v2


def test_rolling_back_to_a_draining_version_keeps_its_files(
    make_service, bucket, built_snapshot, tmp_path
):
    service = make_service()
    v1 = service.chat(QUESTION).snapshot
    publish_copy(bucket, built_snapshot, v1 + "-v2", tmp_path / "v2")
    with service.snapshots.lease():
        service.follower.poll()  # v2 live, v1 draining
        point_latest(bucket, v1)
        service.follower.poll()  # back to v1: its complete directory is reused
        assert service.snapshots.live.version == v1
    # The old v1 lease ended; the new v1 shares its directory, which must survive.
    assert (tmp_path / "snap" / v1 / ".complete").is_file()
    assert not (tmp_path / "snap" / (v1 + "-v2")).exists()
    assert service.chat(QUESTION, use_cache=False).answer.sources


def test_a_storage_outage_during_polls_never_reaches_a_visitor(
    make_service, bucket, built_snapshot, tmp_path, caplog
):
    storage = Flaky(bucket.root)
    service = make_service(storage)
    v1 = service.chat(QUESTION).snapshot
    storage.down = True
    with caplog.at_level(logging.WARNING, logger="chatbot.bucket.following"):
        service.follower.poll()
        result = service.chat(QUESTION, use_cache=False)
    assert result.snapshot == v1 and result.answer.sources
    messages = [r.getMessage() for r in caplog.records]
    assert any("Could not read the cache epoch" in m for m in messages)
    assert any("Snapshot poll failed" in m for m in messages)
    assert any("Could not write the heartbeat" in m for m in messages)
    # Storage is back: the next poll catches up with what was published meanwhile.
    storage.down = False
    v2 = publish_copy(bucket, built_snapshot, v1 + "-v2", tmp_path / "v2")
    service.follower.poll()
    assert service.chat(QUESTION).snapshot == v2


def test_a_cold_start_without_storage_gives_up_after_bounded_retries_then_recovers(
    bucket, embedder, tmp_path
):
    storage = Flaky(bucket.root)
    storage.down = True
    clock = Clock()
    naps: list[float] = []
    server = SnapshotServer(
        storage, tmp_path / "snap", fingerprint=embedder.fingerprint, open_index=KnowledgeIndex
    )
    follower = BucketFollower(
        server, poll_seconds=10, heartbeat_seconds=60, clock=clock, sleep=naps.append
    )
    with pytest.raises(NotReady, match="cannot read the snapshot store"):
        follower.ensure_ready()
    assert storage.calls == COLD_START_ATTEMPTS and len(naps) == COLD_START_ATTEMPTS - 1
    # Within the backoff the next request gets its 503 at once, without touching storage.
    with pytest.raises(NotReady, match="cannot read the snapshot store"):
        follower.ensure_ready()
    assert storage.calls == COLD_START_ATTEMPTS
    assert server.status()["version"] is None
    storage.down = False
    clock.now += COLD_START_BACKOFF
    follower.ensure_ready()
    with server.lease() as live:
        assert live.version == read_latest(bucket).version


def test_after_a_clear_an_idle_instance_checks_the_epoch_before_serving(chat_client, admin_app):
    """The first request once CONTROL_POLL_SECONDS have passed is fresh, not the old answer
    (a check after serving, in the background, would serve it one more time)."""
    chat = chat_client(CONTROL_POLL_SECONDS="1")
    admin = admin_app(ADMIN_TOKEN="t" * 40).test_client()
    assert chat.post("/chat", json={"message": QUESTION}).get_json()["cached"] is False
    assert chat.post("/chat", json={"message": QUESTION}).get_json()["cached"] is True
    cleared = admin.delete("/cache", headers={"X-Admin-Token": "t" * 40})
    assert cleared.status_code == 200
    time.sleep(1.1)  # the instance is idle for CONTROL_POLL_SECONDS
    assert chat.post("/chat", json={"message": QUESTION}).get_json()["cached"] is False


def test_a_malformed_epoch_is_a_warning_and_latest_is_still_followed(
    make_service, bucket, built_snapshot, tmp_path, caplog
):
    service = make_service()
    v1 = service.chat(QUESTION).snapshot
    bucket.write(EPOCH_KEY, b"banana\n")
    v2 = publish_copy(bucket, built_snapshot, v1 + "-v2", tmp_path / "v2")
    with caplog.at_level(logging.WARNING, logger="chatbot.bucket.following"):
        service.follower.poll()
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.levelname == "WARNING"
    assert warning.getMessage().startswith("Ignoring the cache epoch: ")
    assert service.follower.epoch == 0
    assert service.chat(QUESTION).snapshot == v2


class Broken(LocalStorage):
    """A bucket whose client fails in a way nobody planned for (not a StorageError)."""

    broken = True

    def read(self, key):
        if self.broken:
            raise RuntimeError(f"client bug reading {key}")
        return super().read(key)

    def write(self, key, data, *, if_generation_match=None):
        if self.broken:
            raise RuntimeError(f"client bug writing {key}")
        return super().write(key, data, if_generation_match=if_generation_match)


def test_a_crash_in_any_step_of_a_poll_is_logged_and_the_next_poll_works(
    make_service, bucket, built_snapshot, tmp_path, caplog
):
    storage = Broken(bucket.root)
    storage.broken = False
    service = make_service(storage)
    v1 = service.chat(QUESTION).snapshot
    storage.broken = True
    with caplog.at_level(logging.WARNING, logger="chatbot.bucket.following"):
        service.follower.poll()
        assert service.chat(QUESTION, use_cache=False).snapshot == v1
    crashes = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage() for r in crashes] == [
        "Reading the cache epoch crashed",
        "Snapshot poll crashed",
        "Writing the heartbeat crashed",
    ]
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in crashes)
    storage.broken = False
    v2 = publish_copy(bucket, built_snapshot, v1 + "-v2", tmp_path / "v2")
    bump_epoch(bucket)
    service.follower.poll()
    assert service.follower.epoch == 1 and service.chat(QUESTION).snapshot == v2


def test_an_answer_begun_before_a_clear_is_not_served_after_it(make_service, bucket):
    """A leader that started before the clear stores its answer after it: the epoch in the
    cache key keeps that answer from the requests that come after the clear."""
    service = make_service()
    first = service.chat(QUESTION)
    bump_epoch(bucket)
    service.follower.poll()
    before = cache_key(QUESTION, first.snapshot, 0)  # the late leader's key, from epoch 0
    _, flight, leads = service.cache.begin(before)
    assert leads
    service.cache.end(before, flight, first.answer)
    assert service.chat(QUESTION).cached is False
