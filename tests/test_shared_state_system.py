"""System test of shared state: two real chat processes and an admin process on one Redis.

They share a local-folder bucket and one redis-server, as a fleet shares a bucket and
Memorystore. The tests run in file order; each uses its own client address (the processes
trust one X-Forwarded-For hop), so the fleet-wide limits of one test do not touch the next.
Every wait is a bounded polling loop.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from chatbot.bucket.publishing import publish
from chatbot.bucket.storage import LocalStorage
from chatbot.config import ENVIRONMENT_VARIABLES
from harness.processes import ADMIN_SOURCE, CHAT_SOURCE, FunctionProcess, request
from harness.redis import RedisServer, redis_server_missing
from tests.test_fleet import wait_for

TOKEN = "shared-state-admin-token-5d0c81e2a94f"
CLEAN = {name: "" for name in ENVIRONMENT_VARIABLES}


@dataclass
class Fleet:
    redis: RedisServer
    chats: list[FunctionProcess]
    admin: FunctionProcess

    def ask(self, chat: FunctionProcess, message: str, ip: str, **extra) -> tuple[int, dict, dict]:
        return request(
            "POST",
            f"{chat.url}/chat",
            {"message": message, **extra},
            headers={"X-Forwarded-For": ip},
        )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, built_snapshot):
    missing = redis_server_missing()
    if missing is not None:
        pytest.skip(missing)
    root = tmp_path_factory.mktemp("shared")
    bucket = LocalStorage(root / "bucket")
    publish(bucket, built_snapshot)
    common = {
        **CLEAN,
        "SNAPSHOT_URI": bucket.uri,
        "TRUSTED_PROXY_HOPS": "1",
        "CONTROL_POLL_SECONDS": "30",  # Redis, not the bucket, must carry what is tested here
        "HEARTBEAT_SECONDS": "3600",
    }
    with RedisServer(root / "redis.log") as redis_server:
        env = {**common, "REDIS_URL": redis_server.url}
        chats = [
            FunctionProcess(
                "chat",
                CHAT_SOURCE,
                {**env, "SNAPSHOT_DIR": str(root / f"snap-{name}"), "INSTANCE_ID": name},
                root / f"chat-{name}.log",
            )
            for name in ("a", "b")
        ]
        admin = FunctionProcess(
            "admin", ADMIN_SOURCE, {**env, "ADMIN_TOKEN": TOKEN}, root / "admin.log"
        )
        started: list[FunctionProcess] = []
        try:
            for process in [*chats, admin]:
                started.append(process.start())
            for chat in chats:
                chat.wait_healthy()
            yield Fleet(redis_server, chats, admin)
        finally:
            for process in started:
                process.stop()


def test_25_concurrent_requests_from_one_ip_over_two_instances_20_pass(fleet):
    def one(i: int) -> tuple[int, dict]:
        status, _, headers = fleet.ask(fleet.chats[i % 2], f"question number {i}", "192.0.2.25")
        return status, headers

    with ThreadPoolExecutor(max_workers=25) as pool:
        results = list(pool.map(one, range(25)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 20 + [429] * 5
    for status, headers in results:
        if status == 429:
            assert int(headers["Retry-After"]) >= 1


def test_an_answer_from_a_is_cached_on_b_and_a_clear_reaches_both_at_once(fleet):
    a, b = fleet.chats
    question = "Where is your headquarters?"
    assert fleet.ask(a, question, "192.0.2.30")[1]["cached"] is False
    assert fleet.ask(b, question, "192.0.2.30")[1]["cached"] is True
    status, cleared, _ = request(
        "DELETE", f"{fleet.admin.url}/cache", headers={"X-Admin-Token": TOKEN}
    )
    assert status == 200 and "next request" in cleared["message"], cleared
    # No waiting: the epoch is read from Redis on every request (polls are 30 s apart here).
    assert fleet.ask(b, question, "192.0.2.30")[1]["cached"] is False
    assert fleet.ask(a, question, "192.0.2.30")[1]["cached"] is True  # b's fresh answer
    status, stats, _ = request(
        "GET", f"{fleet.admin.url}/cache/stats", headers={"X-Admin-Token": TOKEN}
    )
    assert status == 200
    assert stats["redis"]["reachable"] is True and stats["redis"]["epoch"] == cleared["epoch"]
    assert stats["redis"]["hits"] >= 2 and stats["redis"]["misses"] >= 2


def health(chat: FunctionProcess) -> str:
    status, body, _ = request("GET", f"{chat.url}/health")
    assert status == 200, body
    return body["status"]


def test_redis_killed_under_load_no_5xx_degraded_then_shared_again(fleet):
    a, b = fleet.chats
    questions = ["What services do you offer?", "Who founded Romega?", "What is your day rate?"]
    statuses: list[int] = []
    after_kill: list[int] = []
    killed, stop = threading.Event(), threading.Event()

    def load(worker: int) -> None:
        i = 0
        while not stop.is_set():
            chat = fleet.chats[(worker + i) % 2]
            extra = {"use_cache": i % 5 != 0}
            if i % 7 == 0:
                extra["stream"] = True
            ip = f"198.51.{worker}.{i % 250}"  # many visitors: the limits stay out of the way
            status, _, _ = fleet.ask(chat, questions[i % 3], ip, **extra)
            (after_kill if killed.is_set() else statuses).append(status)
            i += 1

    workers = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(1.0)
        fleet.redis.kill()
        killed.set()
        wait_for(lambda: health(a) == "degraded" and health(b) == "degraded", 10, "degraded")
        wait_for(lambda: after_kill.count(200) > 20, 30, "answers to keep coming")
    finally:
        stop.set()
        for worker in workers:
            worker.join(60)
    everything = statuses + after_kill
    assert statuses and all(status == 200 for status in everything), sorted(set(everything))

    fleet.redis.start()
    restarted = time.monotonic()
    question = "How do I contact Romega?"

    def shared_again() -> bool:
        if health(a) != "healthy" or health(b) != "healthy":
            return False
        fleet.ask(a, question, "192.0.2.40")
        return fleet.ask(b, question, "192.0.2.40")[1].get("cached") is True

    wait_for(shared_again, 10, "shared state to come back", interval=0.2)
    assert time.monotonic() - restarted < 10
    for chat in (a, b):
        log = Path(chat.log_path).read_text()
        assert log.count("Redis is unreachable") == 1, log[-3000:]
        assert log.count("Redis answers again") == 1
