"""System test of the fleet: real processes around one Cloud Storage bucket (fake-gcs-server).

Two chat function processes and one admin process share a bucket and nothing else, as in the
cloud. The tests run in file order as one story: v1 is served, a published v2 reaches both
chat instances under load, the admin rolls back and forward, a corrupt v3 is refused, the
admin clears every instance's cache. The last test starts a chat instance while storage is
unreachable and watches it recover by itself. Every wait is a bounded polling loop.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs

from chatbot.bucket.gcs import GCSStorage
from chatbot.bucket.publishing import BuiltSnapshot
from chatbot.config import ENVIRONMENT_VARIABLES
from harness.fake_gcs import FakeGCSServer
from harness.processes import ADMIN_SOURCE, CHAT_SOURCE, FunctionProcess, free_port, request
from tests.publishing import corrupt_archive, point_latest, publish_copy

TOKEN = "fleet-admin-token-93b1f07c2d-6e0a4b8f15"
WRONG_TOKENS = ("fleet-wrong-guess-1a2b3c", "")
POLL = 0.5  # CONTROL_POLL_SECONDS of every process here
QUESTIONS = [
    "What services do you offer?",
    "Where is your headquarters?",
    "Who founded Romega?",
    "What is the senior consultant day rate?",
]
# Variables a developer's shell (or the Makefile) may export; blanked so they cannot leak in.
_KEEP = {"GOOGLE_CLOUD_PROJECT", "GCP_PROJECT", "GCLOUD_PROJECT"}
CLEAN = {name: "" for name in ENVIRONMENT_VARIABLES if name not in _KEEP}


def wait_for(check: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Call ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def gcs_storage(server: FakeGCSServer, bucket: str, prefix: str) -> GCSStorage:
    """The test's own client of the fake server (the processes find it through the env)."""
    client = gcs.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": server.url},
    )
    return GCSStorage(bucket, prefix, client=client, retry_deadline=5.0)


def chat_env(server_url: str, uri: str, snapshot_dir: Path, instance: str) -> dict[str, str]:
    return {
        **CLEAN,
        "SNAPSHOT_URI": uri,
        "SNAPSHOT_DIR": str(snapshot_dir),
        "STORAGE_EMULATOR_HOST": server_url,
        "CONTROL_POLL_SECONDS": str(POLL),
        "HEARTBEAT_SECONDS": "1",
        "INSTANCE_ID": instance,
        "RATE_LIMIT_CHAT": "100000/minute",
        "RATE_LIMIT_STATS": "100000/minute",
    }


@dataclass
class Fleet:
    storage: GCSStorage
    built: BuiltSnapshot
    workdir: Path
    chats: list[FunctionProcess]
    admin: FunctionProcess
    snapshot_dirs: list[Path]
    versions: dict[str, str] = field(default_factory=dict)

    def admin_call(self, method: str, path: str, body: dict | None = None, token=TOKEN):
        headers = {} if token is None else {"X-Admin-Token": token}
        return request(method, f"{self.admin.url}{path}", body, headers=headers)

    def serving(self) -> list[str | None]:
        """The version each chat instance's /health reports (a request also triggers polls)."""
        return [request("GET", f"{c.url}/health")[1]["snapshot"].get("version") for c in self.chats]

    def wait_serving(self, version: str, timeout: float = 20.0) -> None:
        wait_for(
            lambda: all(v == version for v in self.serving()),
            timeout,
            f"every chat instance to serve {version}",
        )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, fake_gcs, built_snapshot):
    root = tmp_path_factory.mktemp("fleet")
    bucket = f"fleet-{uuid.uuid4().hex[:12]}"
    fake_gcs.create_bucket(bucket)
    storage = gcs_storage(fake_gcs, bucket, "romega")
    v1 = publish_copy(storage, built_snapshot, "20260101T000000Z-fleet1", root / "archives")
    uri = f"gs://{bucket}/romega"
    dirs = [root / "snap-a", root / "snap-b"]
    chats = [
        FunctionProcess(
            "chat", CHAT_SOURCE, chat_env(fake_gcs.url, uri, d, name), root / f"{name}.log"
        )
        for d, name in zip(dirs, ("chat-a", "chat-b"), strict=True)
    ]
    admin_env = {
        **chat_env(fake_gcs.url, uri, root / "snap-admin", "admin"),
        "ADMIN_TOKEN": TOKEN,
        "RATE_LIMIT_ADMIN": "100000/minute",
        "RATE_LIMIT_ADMIN_WRITE": "100000/minute",
    }
    admin = FunctionProcess("admin", ADMIN_SOURCE, admin_env, root / "admin.log")
    procs = [*chats, admin]
    try:
        with ThreadPoolExecutor(len(procs)) as pool:
            list(pool.map(lambda p: p.start(), procs))
            list(pool.map(lambda c: c.wait_healthy(), chats))
        fleet = Fleet(storage, built_snapshot, root / "archives", chats, admin, dirs)
        fleet.versions["v1"] = v1
        yield fleet
    finally:
        for proc in procs:
            proc.stop()


class Load(threading.Thread):
    """Visitors asking questions of one chat instance until stopped; every outcome recorded."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stopping = threading.Event()
        self.results: list[tuple[int, str | None, float]] = []

    def run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            body = {"message": QUESTIONS[i % len(QUESTIONS)], "use_cache": i % 3 != 0}
            started = time.monotonic()
            try:
                status, reply, _ = request("POST", f"{self.url}/chat", body, timeout=10)
            except OSError as exc:  # a dropped connection is a failed request too
                status, reply = 0, {"error": repr(exc)}
            self.results.append((status, reply.get("snapshot"), time.monotonic() - started))
            i += 1
            time.sleep(0.01)


# -- the story ---------------------------------------------------------------------------------


def test_both_instances_answer_from_v1(fleet):
    for chat in fleet.chats:
        status, body, _ = request("POST", f"{chat.url}/chat", {"message": QUESTIONS[0]})
        assert status == 200, body
        assert body["snapshot"] == fleet.versions["v1"] and body["sources"]


def test_a_new_publish_reaches_both_under_load_without_a_failed_request(fleet):
    v1 = fleet.versions["v1"]
    loads = [Load(chat.url) for chat in fleet.chats]
    for load in loads:
        load.start()
    try:
        wait_for(lambda: all(len(load.results) >= 5 for load in loads), 20, "load to start")
        v2 = publish_copy(fleet.storage, fleet.built, "20260101T000000Z-fleet2", fleet.workdir)
        fleet.versions["v2"] = v2
        switched = time.monotonic()
        wait_for(
            lambda: all(any(s == v2 for _, s, _ in load.results) for load in loads),
            10 * POLL + 10,
            "v2 to be served",
        )
        took = time.monotonic() - switched
        time.sleep(2 * POLL)  # keep asking a little after the swap
    finally:
        for load in loads:
            load.stopping.set()
        for load in loads:
            load.join(timeout=15)
    for load in loads:
        statuses = {status for status, _, _ in load.results}
        assert statuses == {200}, [r for r in load.results if r[0] != 200][:5]
        seen = [snapshot for _, snapshot, _ in load.results]
        assert seen[0] == v1 and seen[-1] == v2
        # Once an instance swaps, it never answers from the old snapshot again.
        assert v1 not in seen[seen.index(v2) :]
    assert took < 10, f"the switch took {took:.1f}s with CONTROL_POLL_SECONDS={POLL}"
    # The old snapshot's directory is deleted once no request uses it.
    for snapshot_dir in fleet.snapshot_dirs:
        wait_for(
            lambda d=snapshot_dir: not (d / v1).exists(), 10, f"{snapshot_dir}/{v1} to be deleted"
        )
        assert (snapshot_dir / v2 / ".complete").is_file()


def test_the_admin_rolls_back_and_forward(fleet):
    v1, v2 = fleet.versions["v1"], fleet.versions["v2"]
    status, body, _ = fleet.admin_call("POST", "/snapshots/activate", {"version": v1})
    assert status == 200, body
    assert body["previous"] == v2
    fleet.wait_serving(v1)
    status, body, _ = fleet.admin_call("GET", "/snapshots")
    assert status == 200 and body["latest"] == v1
    assert {s["version"] for s in body["snapshots"]} == {v1, v2}
    status, body, _ = fleet.admin_call("POST", "/snapshots/activate", {"version": v2})
    assert status == 200, body
    fleet.wait_serving(v2)


def test_a_corrupt_snapshot_is_refused_and_v2_keeps_serving(fleet):
    v2 = fleet.versions["v2"]
    v3 = publish_copy(
        fleet.storage, fleet.built, "20260101T000000Z-fleet3", fleet.workdir, latest=False
    )
    corrupt_archive(fleet.storage, v3)  # rewritten through the GCS client: sha256 now wrong
    point_latest(fleet.storage, v3)

    def refusals():
        # Requests make instances poll and heartbeat; the reasons reach the admin's fleet
        # view through the heartbeats (the public /health does not show them).
        for chat in fleet.chats:
            request("GET", f"{chat.url}/health")
        status, view, _ = fleet.admin_call("GET", "/cache/stats")
        assert status == 200, view
        mine = [i for i in view["instances"] if i["instance_id"] in ("chat-a", "chat-b")]
        return mine if len(mine) == 2 and all(v3 in i["refused"] for i in mine) else None

    for instance in wait_for(refusals, 10 * POLL + 10, "both instances to refuse v3"):
        assert instance["snapshot"] == v2
        assert "failed its integrity check" in instance["refused"][v3]
    for chat in fleet.chats:
        status, health, _ = request("GET", f"{chat.url}/health")
        assert status == 200 and health["status"] == "healthy"
        assert health["snapshot"] == {
            "version": v2,
            "documents": health["snapshot"]["documents"],
            "chunks": fleet.built.manifest.chunks,
        }
    for chat in fleet.chats:
        status, body, _ = request("POST", f"{chat.url}/chat", {"message": QUESTIONS[1]})
        assert status == 200 and body["snapshot"] == v2
    # The admin refuses it too, and puts LATEST back on the good version.
    status, body, _ = fleet.admin_call("POST", "/snapshots/activate", {"version": v3})
    assert status == 409 and "integrity check" in body["error"]
    status, body, _ = fleet.admin_call("POST", "/snapshots/activate", {"version": v2})
    assert status == 200 and body["previous"] == v3


def test_clearing_the_cache_reaches_every_instance(fleet):
    question = QUESTIONS[2]
    for chat in fleet.chats:
        request("POST", f"{chat.url}/chat", {"message": question})
        status, body, _ = request("POST", f"{chat.url}/chat", {"message": question})
        assert status == 200 and body["cached"] is True

    status, body, _ = fleet.admin_call("DELETE", "/cache")
    assert status == 200, body
    epoch = body["epoch"]
    assert (
        body["message"].startswith("Cache cleared.")
        and f"CONTROL_POLL_SECONDS ({POLL:g} s)" in body["message"]
    )
    cleared = time.monotonic()

    def entries() -> list[int]:
        return [request("GET", f"{c.url}/cache/stats")[1]["valid_entries"] for c in fleet.chats]

    wait_for(lambda: entries() == [0, 0], 10, "both caches to be empty")
    # A poll starts at most POLL after the previous one; allow for a loaded machine.
    assert time.monotonic() - cleared < POLL + 4
    for chat in fleet.chats:
        status, body, _ = request("POST", f"{chat.url}/chat", {"message": question})
        assert status == 200 and body["cached"] is False

    def fleet_view():
        for chat in fleet.chats:  # requests are what make instances poll and heartbeat
            request("GET", f"{chat.url}/cache/stats")
        status, view, _ = fleet.admin_call("GET", "/cache/stats")
        assert status == 200, view
        mine = [i for i in view["instances"] if i["instance_id"] in ("chat-a", "chat-b")]
        ready = len(mine) == 2 and all(
            i["epoch"] == epoch and i["cache"]["valid_entries"] == 1 for i in mine
        )
        return view if ready else None

    view = wait_for(fleet_view, 15, "both heartbeats to report the cleared cache", interval=0.3)
    assert view["epoch"] == epoch
    assert sorted(i["instance_id"] for i in view["instances"]) == ["chat-a", "chat-b"]
    for instance in view["instances"]:
        assert instance["epoch_applied"] is True
        assert instance["cache"]["misses"] >= 2 and instance["cache"]["hits"] >= 1
    assert view["totals"]["instances"] == 2 and view["totals"]["entries"] == 2
    assert view["totals"]["hits"] == sum(i["cache"]["hits"] for i in view["instances"])


def test_the_admin_needs_its_token_and_no_token_is_logged(fleet):
    for token in (None, *WRONG_TOKENS):
        for method, path in (("GET", "/cache/stats"), ("DELETE", "/cache"), ("GET", "/snapshots")):
            status, body, _ = fleet.admin_call(method, path, token=token)
            assert status == 401, (method, path, body)
            assert body == {"error": "Missing or invalid X-Admin-Token", "status": "error"}
    for proc in (*fleet.chats, fleet.admin):
        log = proc.log()
        assert log, proc.target
        for secret in (TOKEN, *filter(None, WRONG_TOKENS)):
            assert secret not in log, f"{secret} leaked into the {proc.target} log"
        assert "Traceback" not in log, log[-3000:]


# -- storage down ------------------------------------------------------------------------------


def test_a_cold_start_without_storage_reports_why_and_recovers_by_itself(tmp_path, built_snapshot):
    port = free_port()  # nothing listens here yet
    bucket, uri = "cold-start", "gs://cold-start/romega"
    env = chat_env(f"http://127.0.0.1:{port}", uri, tmp_path / "snap", "chat-cold")
    chat = FunctionProcess("chat", CHAT_SOURCE, env, tmp_path / "chat-cold.log").start()
    server = FakeGCSServer(log_file=tmp_path / "gcs.log", port=port)
    try:
        started = time.monotonic()
        status, health, headers = request("GET", f"{chat.url}/health", timeout=60)
        assert status == 503, health
        assert time.monotonic() - started < 40  # bounded retries, not the client's 2 minutes
        assert health["message"] == "Service not ready: no snapshot can be served yet"
        assert int(headers["Retry-After"]) >= 1
        status, body, _ = request("POST", f"{chat.url}/chat", {"message": QUESTIONS[0]})
        assert status == 503 and body["error"] == "Service not ready: no snapshot can be served yet"
        assert "cannot read the snapshot store" in chat.log()  # the reason goes to the logs

        server.start()
        server.create_bucket(bucket)
        storage = gcs_storage(server, bucket, "romega")
        version = publish_copy(storage, built_snapshot, "20260101T000000Z-cold", tmp_path / "a")

        def answered():
            status, body, _ = request("POST", f"{chat.url}/chat", {"message": QUESTIONS[0]})
            return body if status == 200 else None

        assert (
            wait_for(answered, 45, "the instance to recover", interval=0.5)["snapshot"] == version
        )

        # Storage goes away while the instance serves: polls fail in the background, visitors
        # do not notice.
        server.stop()
        latencies = []
        for i in range(15):
            started = time.monotonic()
            status, body, _ = request(
                "POST", f"{chat.url}/chat", {"message": QUESTIONS[i % 2], "use_cache": i % 2 == 0}
            )
            latencies.append(time.monotonic() - started)
            assert status == 200, body
            time.sleep(0.1)
        assert max(latencies) < 1.0, latencies

        def poll_failure_logged():
            request("GET", f"{chat.url}/health")  # requests are what start polls
            log = chat.log()
            return "Could not read the cache epoch" in log or "Snapshot poll failed" in log

        wait_for(poll_failure_logged, 20, "the failed poll's warning", interval=0.5)
        assert request("GET", f"{chat.url}/health")[0] == 200
        assert "Traceback" not in chat.log()
    finally:
        chat.stop()
        server.stop()
