"""A chat instance following the bucket: hot swaps, draining, outages, cold-start retries."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from datetime import UTC, datetime

import pytest

from chatbot.answering.cache import cache_key
from chatbot.answering.retrieval import KnowledgeIndex
from chatbot.answering.service import ChatService
from chatbot.bucket.control import EPOCH_KEY, bump_epoch
from chatbot.bucket.following import COLD_START_ATTEMPTS, COLD_START_BACKOFF, BucketFollower
from chatbot.bucket.layout import heartbeat_key, read_latest
from chatbot.bucket.serving import SnapshotServer
from chatbot.bucket.storage import LocalStorage
from chatbot.config import Settings
from chatbot.errors import NotReady, SnapshotUnavailable, StorageError
from tests.publishing import corrupt_archive, point_latest, publish_copy

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
    messages = [r.getMessage() for r in caplog.records if r.name == "chatbot.bucket.following"]
    why = f"{storage.uri}: ConnectionError: connection refused"
    assert messages == [
        f"Could not read the cache epoch: {why}",
        f"Snapshot poll failed: {why}",
        f"Could not write the heartbeat: {why}",
    ]
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
    (warning,) = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name == "chatbot.bucket.following"
    ]
    assert warning.levelname == "WARNING"
    assert warning.getMessage() == (
        "Ignoring the cache epoch: control/cache-epoch holds b'banana\\n', not an integer"
    )
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
    crashes = [
        r for r in caplog.records if r.levelname == "ERROR" and r.name == "chatbot.bucket.following"
    ]
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


# -- the follower alone: a clock of its own, no chat service ---------------------------------


def follower_of(storage, embedder, tmp_path, clock, **kwargs) -> BucketFollower:
    server = SnapshotServer(
        storage, tmp_path / "snap", fingerprint=embedder.fingerprint, open_index=KnowledgeIndex
    )
    kwargs.setdefault("heartbeat_seconds", 60)
    return BucketFollower(server, poll_seconds=10, clock=clock, **kwargs)


def polled(follower: BucketFollower) -> None:
    """The request's side of a poll, then the rest of its round (off the request's path)."""
    follower.maybe_poll()
    if follower._poller is not None:
        follower._poller.join(60)


def test_a_request_past_the_interval_polls_loads_latest_and_heartbeats_on_its_own_clock(
    bucket, embedder, built_snapshot, tmp_path
):
    clock = Clock()
    epochs: list[int] = []
    follower = follower_of(
        bucket,
        embedder,
        tmp_path,
        clock,
        instance_id="chat-1",
        stats=lambda: {"hits": 7},
        on_epoch_change=epochs.append,
    )
    follower.ensure_ready()  # the cold start counts as a poll
    v1 = follower.server.live.version
    v2 = publish_copy(bucket, built_snapshot, v1 + "-v2", tmp_path / "v2")
    bump_epoch(bucket)
    clock.now += 9.9
    polled(follower)
    assert follower._poller is None and follower.server.live.version == v1  # not yet
    clock.now += 0.1  # exactly CONTROL_POLL_SECONDS later
    polled(follower)
    assert follower.server.live.version == v2 and follower.epoch == 1 and epochs == [1]
    raw, first = bucket.read(heartbeat_key("chat-1"))
    beat = json.loads(raw)
    assert {k: beat[k] for k in ("instance_id", "snapshot", "epoch", "cache", "refused")} == {
        "instance_id": "chat-1",
        "snapshot": v2,
        "epoch": 1,
        "cache": {"hits": 7},
        "refused": {},
    }
    assert abs(beat["written_at_epoch_s"] - time.time()) < 600
    written_at = datetime.fromisoformat(beat["written_at"])
    assert written_at.tzinfo == UTC
    assert abs(written_at.timestamp() - beat["written_at_epoch_s"]) < 2
    clock.now += 50  # polled again, but the heartbeat is 50 s old: not written again
    polled(follower)
    assert bucket.generation(heartbeat_key("chat-1")) == first
    clock.now += 10  # 60 s: HEARTBEAT_SECONDS
    polled(follower)
    assert bucket.generation(heartbeat_key("chat-1")) != first
    assert epochs == [1]  # the epoch did not move again


class Stuck(LocalStorage):
    """A bucket whose reads hang until released, counting them."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.release = threading.Event()
        self.reading = threading.Event()
        self.reads = 0

    def read(self, key):
        self.reads += 1
        self.reading.set()
        self.release.wait(60)
        return super().read(key)


def test_a_hanging_bucket_delays_a_request_at_most_the_check_budget_and_one_poll_runs(
    bucket, embedder, tmp_path
):
    clock = Clock()
    follower = follower_of(bucket, embedder, tmp_path, clock)
    follower.ensure_ready()
    stuck = Stuck(bucket.root)
    follower.storage = stuck
    clock.now += 10
    follower.maybe_poll()  # returns after CHECK_BUDGET_SECONDS with the read still hanging
    poller = follower._poller
    assert stuck.reading.wait(10)  # (on a loaded machine the thread may start late)
    assert poller is not None and poller.is_alive() and stuck.reads == 1
    # A daemon, so a hung poll never keeps the process from exiting; named for thread dumps.
    assert poller.daemon and poller.name == "snapshot-poll"
    clock.now += 10
    follower.maybe_poll()  # the first poll is still on its way: no second one
    assert follower._poller is poller and stuck.reads == 1
    stuck.release.set()
    poller.join(60)
    clock.now += 10
    polled(follower)
    assert stuck.reads > 2  # a new round once the old one ended


def test_a_cold_start_retries_storage_errors_with_growing_naps_and_says_why(
    bucket, embedder, tmp_path, caplog
):
    storage = Flaky(bucket.root)
    storage.down = True
    clock = Clock()
    naps: list[float] = []
    follower = follower_of(storage, embedder, tmp_path, clock, sleep=naps.append)
    with caplog.at_level(logging.WARNING, logger="chatbot.bucket.following"):
        with pytest.raises(SnapshotUnavailable) as refused:
            follower.ensure_ready()
    assert naps == [0.2, 0.4]
    assert (
        refused.value.reason
        == follower.not_ready_reason
        == (f"cannot read the snapshot store: {storage.uri}: ConnectionError: connection refused")
    )
    messages = [r.getMessage() for r in caplog.records if r.name == "chatbot.bucket.following"]
    assert messages[:3] == [
        f"Snapshot store unreachable (attempt {n}/3): "
        f"{storage.uri}: ConnectionError: connection refused"
        for n in (1, 2, 3)
    ]
    assert messages[3] == (
        f"No snapshot can be served: {storage.uri}: ConnectionError: connection refused"
    )
    storage.down = False
    clock.now += COLD_START_BACKOFF - 0.01
    with pytest.raises(SnapshotUnavailable):
        follower.ensure_ready()
    clock.now += 0.01  # exactly COLD_START_BACKOFF after the failure
    follower.ensure_ready()
    assert follower.server.live is not None


def test_a_refused_snapshot_is_not_retried_and_an_unexpected_crash_is_a_503(
    bucket, embedder, tmp_path, caplog
):
    storage = Flaky(bucket.root)
    corrupt_archive(bucket, read_latest(bucket).require())
    clock = Clock()
    naps: list[float] = []
    follower = follower_of(storage, embedder, tmp_path, clock, sleep=naps.append)
    with pytest.raises(SnapshotUnavailable, match="integrity check"):
        follower.ensure_ready()
    assert naps == [] and "failed its integrity check" in follower.not_ready_reason

    class Crashing(LocalStorage):
        def read(self, key):
            raise RuntimeError("client bug")

    crashing = follower_of(
        Crashing(bucket.root), embedder, tmp_path / "c", clock, sleep=naps.append
    )
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="chatbot.bucket.following"):
        with pytest.raises(SnapshotUnavailable):
            crashing.ensure_ready()
    assert naps == []
    assert crashing.not_ready_reason == "cannot load a snapshot: RuntimeError('client bug')"
    crashed = [r for r in caplog.records if r.name == "chatbot.bucket.following"]
    assert [r.getMessage() for r in crashed] == [
        "Cold start failed unexpectedly",
        "No snapshot can be served: cannot load a snapshot: RuntimeError('client bug')",
    ]
    assert isinstance(crashed[0].exc_info[1], RuntimeError)  # with its traceback

    class Verbose(Flaky):
        def _check(self):
            raise StorageError("refused " + "x" * 300)

    verbose = follower_of(Verbose(bucket.root), embedder, tmp_path / "v", clock, sleep=naps.append)
    with pytest.raises(SnapshotUnavailable):
        verbose.ensure_ready()
    reason = verbose.not_ready_reason  # the reason's storage error is cut at 200 characters
    assert reason == "cannot read the snapshot store: refused " + "x" * 189 + "..."


def test_a_version_loaded_meanwhile_is_not_loaded_again(bucket, embedder, tmp_path):
    """The round read LATEST before a cold start loaded the same version: it keeps that one."""
    follower = follower_of(bucket, embedder, tmp_path, Clock())
    follower.ensure_ready()
    live = follower.server.live
    follower._catch_up(live.version)
    assert follower.server.live is live


def test_a_corrupt_new_version_is_refused_once_and_the_old_one_kept(
    bucket, embedder, built_snapshot, tmp_path, caplog
):
    clock = Clock()
    follower = follower_of(bucket, embedder, tmp_path, clock)
    follower.ensure_ready()
    v1 = follower.server.live.version
    v2 = publish_copy(bucket, built_snapshot, v1 + "-v2", tmp_path / "v2")
    corrupt_archive(bucket, v2)
    with caplog.at_level(logging.WARNING, logger="chatbot.bucket.following"):
        follower.poll()
    assert follower.server.live.version == v1 and v2 in follower.server.refused
    assert [r.getMessage() for r in caplog.records if r.name == "chatbot.bucket.following"] == [
        f"Snapshot poll failed: snapshot {v2} failed its integrity check: "
        + follower.server.refused[v2].split("integrity check: ", 1)[1]
    ]
    assert follower._check_control() is None  # refused: not wanted again


def test_a_crash_while_loading_a_new_version_is_logged_and_the_old_one_kept(
    bucket, embedder, built_snapshot, tmp_path, caplog
):
    follower = follower_of(bucket, embedder, tmp_path, Clock())
    follower.ensure_ready()
    v1 = follower.server.live.version
    publish_copy(bucket, built_snapshot, v1 + "-v2", tmp_path / "v2")

    def load(version):
        raise RuntimeError("a bug while loading")

    follower.server.load = load
    with caplog.at_level(logging.WARNING, logger="chatbot.bucket.following"):
        follower.poll()
    (crash,) = [r for r in caplog.records if r.name == "chatbot.bucket.following"]
    assert crash.levelname == "ERROR" and crash.getMessage() == "Snapshot poll crashed"
    assert isinstance(crash.exc_info[1], RuntimeError)
    assert follower.server.live.version == v1


def test_a_follower_without_options_names_itself_and_reports_an_empty_cache(
    bucket, embedder, tmp_path, caplog
):
    server = SnapshotServer(
        bucket, tmp_path / "snap", fingerprint=embedder.fingerprint, open_index=KnowledgeIndex
    )
    follower = BucketFollower(server, poll_seconds=10, heartbeat_seconds=0)
    assert re.fullmatch(rf"{os.getpid()}-[0-9a-f]{{8}}", follower.instance_id)
    bump_epoch(bucket)
    with caplog.at_level(logging.INFO, logger="chatbot.bucket.following"):
        polled(follower)  # a request before any cold start polls too
    assert follower.epoch == 1
    assert "Cache epoch moved 0 -> 1: dropping cached answers" in [
        r.getMessage() for r in caplog.records
    ]
    beat = json.loads(bucket.read(heartbeat_key(follower.instance_id))[0])
    assert beat["cache"] == {} and beat["snapshot"] == read_latest(bucket).version
