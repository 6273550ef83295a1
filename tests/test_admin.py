"""The admin function in-process: the real functions-framework app over a local-folder bucket."""

from __future__ import annotations

import logging
import time

import pytest

from chatbot.answering.retrieval import KnowledgeIndex
from chatbot.answering.service import ChatService
from chatbot.bucket.control import (
    BUMP_ATTEMPTS,
    EPOCH_KEY,
    MalformedEpoch,
    bump_epoch,
    fleet_view,
    read_epoch,
    write_heartbeat,
)
from chatbot.bucket.following import BucketFollower
from chatbot.bucket.layout import LATEST, archive_key, heartbeat_key, read_latest
from chatbot.bucket.serving import SnapshotServer
from chatbot.bucket.storage import LocalStorage
from chatbot.config import Settings
from chatbot.errors import StorageError
from chatbot.web import create_admin_app
from chatbot.web.openapi import admin_document
from tests.conftest import serve
from tests.openapi_check import Contract
from tests.publishing import corrupt_archive, publish_copy

TOKEN = "admin-test-token-5f1c2e9a-0b7d3e61c4a8"
ROUTES = [
    ("GET", "/cache/stats"),
    ("DELETE", "/cache"),
    ("GET", "/snapshots"),
    ("POST", "/snapshots/activate"),
    ("GET", "/openapi.json"),
    ("GET", "/"),
]
CONTRACT = Contract(admin_document(Settings()))


def check_contract(response, path: str, method: str) -> None:
    """Hold every response to the admin function's OpenAPI document."""
    CONTRACT.check(response, path, method)


@pytest.fixture
def admin_client(admin_app):
    """A test client of the admin function serving ``bucket``; ADMIN_TOKEN=TOKEN by default."""

    def make(**env):
        env.setdefault("ADMIN_TOKEN", TOKEN)
        client = admin_app(**{k: v for k, v in env.items() if v is not None}).test_client()

        def call(method, path, token=TOKEN, **kwargs):
            headers = kwargs.pop("headers", {})
            if token is not None:
                headers["X-Admin-Token"] = token
            response = client.open(path, method=method, headers=headers, **kwargs)
            check_contract(response, path, method)
            return response

        return call

    return make


# -- the token --------------------------------------------------------------------------------


@pytest.mark.parametrize("method,path", ROUTES)
def test_every_route_refuses_a_missing_or_wrong_token(admin_client, bucket, method, path):
    call = admin_client()
    latest_before = bucket.read(LATEST)
    tokens = (None, "", "wrong", TOKEN.upper(), TOKEN + "x", TOKEN[:-1], "tök")
    for i, token in enumerate(tokens):  # one client IP each: write routes allow 5 a minute
        ip = {"REMOTE_ADDR": f"192.0.2.{i + 1}"}
        resp = call(method, path, token=token, json={"version": "x"}, environ_base=ip)
        assert resp.status_code == 401, (token, resp.get_json())
        assert resp.get_json() == {"error": "Missing or invalid X-Admin-Token", "status": "error"}
    assert bucket.generation(EPOCH_KEY) is None  # nothing was done on the way
    assert bucket.read(LATEST) == latest_before


def test_without_an_admin_token_configured_everything_is_refused(admin_client, bucket):
    call = admin_client(ADMIN_TOKEN=None)
    for method, path in ROUTES:
        for token in (None, "", "anything"):
            resp = call(method, path, token=token)
            assert resp.status_code == 401
            assert "ADMIN_TOKEN is not configured" in resp.get_json()["error"]
    assert bucket.generation(EPOCH_KEY) is None


def test_brute_force_is_rate_limited_before_the_token_is_checked(admin_client):
    call = admin_client(RATE_LIMIT_ADMIN="5/minute")
    routes = [("DELETE", "/cache"), ("GET", "/snapshots"), ("POST", "/snapshots/activate")]
    # Failed attempts on any route count against one limit per client IP (RATE_LIMIT_ADMIN).
    statuses = [call(*routes[i % 3], token=f"guess-{i}").status_code for i in range(7)]
    assert statuses == [401] * 5 + [429, 429]
    # Past it even the right token is not compared.
    assert call("GET", "/cache/stats").status_code == 429
    # The limit is per client IP: another address still gets its own.
    other = call("DELETE", "/cache", environ_base={"REMOTE_ADDR": "192.0.2.9"})
    assert other.status_code == 200


def test_no_token_reaches_the_logs(admin_client, capsys):
    call = admin_client()
    assert call("GET", "/snapshots").status_code == 200
    assert call("GET", "/snapshots", token="wrong-guess-7c1d9e").status_code == 401
    assert call("DELETE", "/cache", token="another-guess-4b2a").status_code == 401
    out = capsys.readouterr()
    logged = out.out + out.err
    assert "/snapshots" in logged  # the summary lines were written where we look
    for secret in (TOKEN, "wrong-guess-7c1d9e", "another-guess-4b2a"):
        assert secret not in logged


# -- cache -------------------------------------------------------------------------------------


def test_delete_cache_bumps_the_epoch_and_says_how_soon(admin_client, bucket):
    call = admin_client(CONTROL_POLL_SECONDS="7")
    first = call("DELETE", "/cache")
    assert first.status_code == 200
    assert first.get_json() == {
        "message": "Cache cleared. Every chat instance serves fresh answers from its first "
        "request once CONTROL_POLL_SECONDS (7 s) have passed since its last check.",
        "epoch": 1,
    }
    assert call("DELETE", "/cache").get_json()["epoch"] == 2
    assert read_epoch(bucket)[0] == 2
    assert call("GET", "/cache/stats").get_json()["epoch"] == 2


def test_delete_cache_is_limited_to_5_per_minute(admin_client):
    call = admin_client()
    responses = [call("DELETE", "/cache") for _ in range(6)]
    assert [r.status_code for r in responses] == [200] * 5 + [429]
    limited = responses[-1]
    assert limited.get_json() == {"error": "Rate limit exceeded: 5 per 1 minute"}
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert [r.get_json()["epoch"] for r in responses[:5]] == [1, 2, 3, 4, 5]


def test_a_clear_reaches_a_chat_instance_on_its_next_poll(admin_client, bucket, embedder, tmp_path):
    settings = Settings.from_env({"SNAPSHOT_DIR": str(tmp_path / "snap")})
    service = ChatService(settings, storage=bucket, embedder=embedder)
    question = "What services do you offer?"
    service.chat(question)
    assert service.chat(question).cached is True
    assert admin_client()("DELETE", "/cache").status_code == 200
    service.follower.poll()
    assert service.cache.stats()["valid_entries"] == 0
    assert service.chat(question).cached is False


def test_concurrent_clears_are_not_lost(bucket, caplog):
    class Racing(LocalStorage):
        """Another admin bumps the epoch between our read and our write, once."""

        raced = False

        def write(self, key, data, *, if_generation_match=None):
            if key == EPOCH_KEY and not self.raced:
                self.raced = True
                bump_epoch(LocalStorage(self.root))
            return super().write(key, data, if_generation_match=if_generation_match)

    storage = Racing(bucket.root)
    with caplog.at_level(logging.INFO, logger="chatbot.bucket.control"):
        assert bump_epoch(storage) == 2  # ours landed after theirs instead of overwriting it
    assert read_epoch(bucket)[0] == 2
    assert [r.getMessage() for r in caplog.records if r.name == "chatbot.bucket.control"] == [
        "Cache epoch changed under us (attempt 1/3)"
    ]


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b"", 0),
        (b"\n", 0),
        (b"0\n", 0),
        (b"7\n", 7),
        (b"-1\n", "control/cache-epoch holds a negative epoch -1"),
        (b"\xe9t\xe9", "control/cache-epoch holds b'\\xe9t\\xe9', not an integer"),
        (
            b"9" * 30 + b"x" * 30,
            "control/cache-epoch holds b'" + "9" * 30 + "x" * 10 + "', not an integer",
        ),
    ],
)
def test_the_epoch_object_is_a_non_negative_integer_or_malformed(bucket, raw, expected):
    generation = bucket.write(EPOCH_KEY, raw)
    if isinstance(expected, int):
        assert read_epoch(bucket) == (expected, generation)
    else:
        with pytest.raises(MalformedEpoch) as malformed:
            read_epoch(bucket)
        assert str(malformed.value) == expected


def test_a_malformed_epoch_is_replaced_by_the_next_clear(bucket, caplog):
    bucket.write(EPOCH_KEY, b"banana\n")
    with caplog.at_level(logging.WARNING, logger="chatbot.bucket.control"):
        assert bump_epoch(bucket) == 1
    assert read_epoch(bucket)[0] == 1
    assert [r.getMessage() for r in caplog.records if r.name == "chatbot.bucket.control"] == [
        "Replacing a malformed cache epoch: control/cache-epoch holds b'banana\\n', not an integer"
    ]


def test_fleet_stats_totals_live_instances_and_leaves_dead_ones_out(admin_client, bucket, tmp_path):
    now = time.time()
    server = SnapshotServer(
        bucket, tmp_path / "snap", fingerprint=lambda: {}, open_index=KnowledgeIndex
    )
    for instance, entries, hits, misses in (("chat-b", 2, 1, 2), ("chat-a", 3, 4, 3)):
        cache = {"valid_entries": entries, "total_entries": entries, "hits": hits, "misses": misses}
        follower = BucketFollower(
            server,
            poll_seconds=10,
            heartbeat_seconds=5,
            instance_id=instance,
            stats=lambda c=cache: c,
        )
        follower.heartbeat()
    write_heartbeat(bucket, "quiet", {"instance_id": "quiet", "written_at_epoch_s": now - 60})
    write_heartbeat(bucket, "gone", {"instance_id": "gone", "written_at_epoch_s": now - 7200})
    bucket.write("control/instances/garbage.json", b"{not json")
    bump_epoch(bucket)

    body = admin_client(HEARTBEAT_SECONDS="5")("GET", "/cache/stats").get_json()
    assert body["epoch"] == 1
    assert [i["instance_id"] for i in body["instances"]] == ["chat-a", "chat-b"]
    assert all(i["epoch_applied"] is False for i in body["instances"])  # they saw epoch 0
    assert body["instances"][0]["cache"]["valid_entries"] == 3
    assert body["totals"] == {
        "instances": 2,
        "entries": 5,
        "hits": 5,
        "misses": 5,
        "hit_rate": 0.5,
    }
    assert [s["instance_id"] for s in body["stale_instances"]] == ["quiet"]
    # Reading the view never deletes: the bucket's lifecycle rule expires old heartbeats.
    assert "pruned" not in body
    assert bucket.generation(heartbeat_key("gone")) is not None


def test_odd_heartbeats_count_as_zero_or_are_skipped_naming_the_object(
    admin_client, bucket, caplog
):
    now = time.time()
    for instance, cache in (
        ("counted", {"hits": 4, "misses": 1, "valid_entries": 7}),
        ("no-counters", {}),
        ("odd-counters", {"hits": True, "misses": "3", "valid_entries": 2.5}),
    ):
        write_heartbeat(
            bucket, instance, {"instance_id": instance, "written_at_epoch_s": now, "cache": cache}
        )
    write_heartbeat(
        bucket, "cache-list", {"instance_id": "x", "written_at_epoch_s": now, "cache": []}
    )
    write_heartbeat(bucket, "no-time", {"instance_id": "no-time"})
    caplog.set_level(logging.WARNING, logger="chatbot.bucket.control")

    body = admin_client()("GET", "/cache/stats").get_json()
    assert [i["instance_id"] for i in body["instances"]] == [
        "counted",
        "no-counters",
        "odd-counters",
    ]
    assert body["totals"] == {
        "instances": 3,
        "entries": 7,
        "hits": 4,
        "misses": 1,
        "hit_rate": 0.8,
    }
    # Only heartbeats are read (the bucket's manifests are JSON too), and each unreadable one
    # is named with what is wrong with it.
    assert sorted(r.getMessage() for r in caplog.records if r.name == "chatbot.bucket.control") == [
        "Ignoring unreadable heartbeat control/instances/cache-list.json: "
        "TypeError('cache is not an object')",
        "Ignoring unreadable heartbeat control/instances/no-time.json: "
        "KeyError('written_at_epoch_s')",
    ]


def test_the_fleet_view_splits_fresh_stale_and_forgotten_instances(tmp_path):
    storage = LocalStorage(tmp_path / "bucket")
    now = 1_000_000.0  # heartbeats every 100 s: fresh within 300 s, forgotten after 6000 s

    def beat(key: str, instance_id: str, age: float, epoch: int = 2) -> None:
        body = {"instance_id": instance_id, "snapshot": f"v-{key}", "written_at": f"at-{key}"}
        body.update(written_at_epoch_s=now - age, epoch=epoch, cache={"hits": 1, "misses": 2})
        write_heartbeat(storage, key, body)

    # The objects' names sort otherwise than the instances' ids and ages, on purpose.
    beat("a", "zeta", -5.0)  # a clock ahead of ours: age 0, not negative
    beat("b", "alpha", 300.0, epoch=1)  # exactly 3 intervals: still fresh; an older epoch
    beat("c", "mu", 12.34)
    beat("d", "late", 6000.0)  # exactly the forget-after age: still listed, as stale
    beat("e", "lost", 6000.5)  # older: not listed at all
    beat("f", "quiet", 300.5)
    for _ in range(2):
        bump_epoch(storage)

    view = fleet_view(storage, now=now, heartbeat_seconds=100.0)
    fresh = [(i["instance_id"], i["age_seconds"], i["epoch_applied"]) for i in view["instances"]]
    assert fresh == [("alpha", 300.0, False), ("mu", 12.3, True), ("zeta", 0.0, True)]
    assert view["stale_instances"] == [
        {"instance_id": "quiet", "snapshot": "v-f", "written_at": "at-f", "age_seconds": 300.5},
        {"instance_id": "late", "snapshot": "v-d", "written_at": "at-d", "age_seconds": 6000.0},
    ]
    assert view["fresh_within_seconds"] == 300.0
    assert view["epoch"] == 2
    assert (view["totals"]["hits"], view["totals"]["misses"]) == (3, 6)
    assert view["totals"]["hit_rate"] == 0.3333
    empty = fleet_view(LocalStorage(tmp_path / "empty"), now=now, heartbeat_seconds=100.0)
    assert empty["totals"] == {
        "instances": 0,
        "entries": 0,
        "hits": 0,
        "misses": 0,
        "hit_rate": 0.0,
    }


# -- snapshots ---------------------------------------------------------------------------------


def test_snapshots_lists_versions_newest_first_and_latest(
    admin_client, bucket, built_snapshot, tmp_path
):
    v1 = read_latest(bucket).version
    v2 = publish_copy(bucket, built_snapshot, v1 + "-v2", tmp_path / "v2")
    bucket.write(archive_key("orphan-1"), b"an interrupted publish")
    body = admin_client()("GET", "/snapshots").get_json()
    assert body["latest"] == v2 and body["count"] == 3
    by_version = {s["version"]: s for s in body["snapshots"]}
    assert by_version[v2]["latest"] is True and by_version[v1]["latest"] is False
    good = by_version[v1]
    assert good["chunks"] == built_snapshot.manifest.chunks
    assert good["archive_sha256"] == built_snapshot.manifest.archive["sha256"]
    assert good["archive_present"] is True and good["embedding"]["dimension"] == 384
    assert "no manifest" in by_version["orphan-1"]["error"]


def test_activate_rolls_back_and_forward(admin_client, bucket, built_snapshot, tmp_path):
    v1 = read_latest(bucket).version
    v2 = publish_copy(bucket, built_snapshot, v1 + "-v2", tmp_path / "v2")
    call = admin_client(CONTROL_POLL_SECONDS="3")
    back = call("POST", "/snapshots/activate", json={"version": v1})
    assert back.status_code == 200, back.get_json()
    body = back.get_json()
    assert body["version"] == v1 and body["previous"] == v2
    assert "within 3 seconds" in body["message"]
    assert body["snapshot"]["chunks"] == built_snapshot.manifest.chunks
    assert read_latest(bucket).version == v1
    again = call("POST", "/snapshots/activate", json={"version": v1}).get_json()
    assert "already LATEST" in again["message"]
    forward = call("POST", "/snapshots/activate", json={"version": v2})
    assert forward.status_code == 200 and read_latest(bucket).version == v2


def test_activate_refuses_an_unknown_version(admin_client, bucket):
    latest = read_latest(bucket)
    resp = admin_client()("POST", "/snapshots/activate", json={"version": "20990101T000000Z-nope"})
    assert resp.status_code == 404
    assert resp.get_json() == {
        "error": "Snapshot 20990101T000000Z-nope is not published (see GET /snapshots)",
        "status": "error",
    }
    assert read_latest(bucket) == latest


def test_activate_refuses_a_corrupt_version(admin_client, bucket, built_snapshot, tmp_path):
    latest = read_latest(bucket)
    bad = publish_copy(
        bucket, built_snapshot, "20990101T000000Z-bad", tmp_path / "bad", latest=False
    )
    corrupt_archive(bucket, bad)
    missing = publish_copy(
        bucket, built_snapshot, "20990101T000000Z-gone", tmp_path / "gone", latest=False
    )
    bucket.delete(archive_key(missing))
    call = admin_client()
    resp = call("POST", "/snapshots/activate", json={"version": bad})
    assert resp.status_code == 409
    assert "failed its integrity check" in resp.get_json()["error"]
    resp = call("POST", "/snapshots/activate", json={"version": missing})
    assert resp.status_code == 409 and "no archive" in resp.get_json()["error"]
    assert read_latest(bucket) == latest


@pytest.mark.parametrize(
    "kwargs,status,message",
    [
        ({"data": "version=x", "content_type": "text/plain"}, 415, "Content-Type must be"),
        ({"data": "{nope", "content_type": "application/json"}, 400, "not valid JSON"),
        ({"data": "", "content_type": "application/json"}, 400, "empty"),
        ({"json": ["v1"]}, 400, "must be a JSON object"),
        ({"json": {}}, 400, "Field 'version' is required"),
        ({"json": {"version": 5}}, 400, "must be a string"),
        ({"json": {"version": None}}, 400, "must be a string"),
        ({"json": {"version": "../LATEST"}}, 400, "must be a snapshot name"),
        ({"json": {"version": "x" * 101}}, 400, "must be a snapshot name"),
        ({"json": {"version": "v1", "force": True}}, 400, "Unknown field(s): force"),
        ({"data": "x" * 70000, "content_type": "application/json"}, 413, "larger than"),
    ],
)
def test_activate_answers_bad_input_with_a_json_4xx(admin_client, bucket, kwargs, status, message):
    latest = read_latest(bucket)
    resp = admin_client()("POST", "/snapshots/activate", **kwargs)
    assert resp.status_code == status
    body = resp.get_json()
    assert body["status"] == "error" and message in body["error"]
    assert read_latest(bucket) == latest


def test_unknown_routes_and_methods_are_json_errors(admin_client):
    call = admin_client()
    missing = call("GET", "/nope")
    assert missing.status_code == 404 and missing.get_json()["status"] == "error"
    wrong = call("GET", "/cache")
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "DELETE, OPTIONS"
    assert call("POST", "/snapshots").status_code == 405


def test_openapi_document_and_index_are_behind_the_token(admin_client):
    call = admin_client()
    assert call("GET", "/openapi.json", token=None).status_code == 401
    document = call("GET", "/openapi.json").get_json()
    assert document["info"]["title"] == "Romega Chatbot admin API"
    index = call("GET", "/").get_json()
    assert {"method": "DELETE", "path": "/cache", "rate_limit": "5/minute"} in index["routes"]


def test_an_unreachable_bucket_is_a_503_with_the_reason():
    class Down(LocalStorage):
        def read(self, key):
            raise StorageError("gs://romega/prod/LATEST: ConnectionError: refused")

        def list(self, prefix):
            raise StorageError("gs://romega/prod/snapshots: ConnectionError: refused")

    settings = Settings(admin_token=TOKEN)
    client = serve(create_admin_app(settings, storage=Down("/nonexistent"))).test_client()
    response = client.get("/snapshots", headers={"X-Admin-Token": TOKEN})
    assert response.status_code == 503
    assert "snapshot store is unreachable" in response.get_json()["error"]


def test_a_clear_that_loses_every_race_is_a_409_and_changes_nothing(bucket):
    class Contended(LocalStorage):
        """Another admin's bump lands between each of our reads and writes."""

        writes = 0

        def write(self, key, data, *, if_generation_match=None):
            if key == EPOCH_KEY:
                self.writes += 1
                LocalStorage.write(self, key, b"%d\n" % (100 + self.writes))
            return super().write(key, data, if_generation_match=if_generation_match)

    storage = Contended(bucket.root)
    settings = Settings(admin_token=TOKEN)
    client = serve(create_admin_app(settings, storage=storage)).test_client()
    response = client.delete("/cache", headers={"X-Admin-Token": TOKEN})
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error.startswith("Another writer changed the bucket meanwhile")
    assert error.endswith(f"({EPOCH_KEY} kept changing during {BUMP_ATTEMPTS} attempts)")
    assert storage.writes == BUMP_ATTEMPTS
    assert read_epoch(bucket)[0] == 100 + BUMP_ATTEMPTS  # only the other writer's bumps landed
