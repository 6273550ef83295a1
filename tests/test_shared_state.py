"""Shared state on a real redis-server: the link's failure behaviour, fleet-wide limits and
answers between two instances' objects, the epoch, configuration and the log redactor.

Two "instances" here are two sets of objects with their own links to one Redis; the system
test (tests/test_shared_state_system.py) runs two real chat processes.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
import redis

from chatbot.answering.cache import AnswerCache
from chatbot.config import Settings
from chatbot.errors import ConfigError
from chatbot.logs import configure_logging
from chatbot.shared_state import RedisLink, SharedAnswers, SharedStateDown, open_link
from chatbot.shared_state.link import BACKOFF_CAP_SECONDS
from chatbot.web.ratelimit import RateLimiter
from harness.processes import free_port


def link_to(url: str, timeout_ms: int = 50, clock=time.monotonic) -> RedisLink:
    link = open_link(Settings.from_env({"REDIS_URL": url, "REDIS_TIMEOUT_MS": str(timeout_ms)}))
    assert link is not None
    return RedisLink(link.client, clock=clock)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the link ------------------------------------------------------------------------------


def test_a_dead_redis_fails_fast_warns_once_backs_off_and_recovers(redis_server, caplog):
    clock = Clock()
    link = link_to(redis_server.url, clock=clock)
    assert link.call(lambda c: c.ping()) is True
    redis_server.kill()
    calls = []

    def ping(client):
        calls.append(1)
        return client.ping()

    caplog.set_level(logging.WARNING, logger="chatbot.shared_state.link")
    started = time.perf_counter()
    with pytest.raises(SharedStateDown):
        link.call(ping)
    assert time.perf_counter() - started < 1.0  # bounded by REDIS_TIMEOUT_MS, no retries
    assert link.up is False
    for _ in range(50):  # resting: nobody calls Redis until the backoff has passed
        with pytest.raises(SharedStateDown):
            link.call(ping)
    assert len(calls) == 1
    clock.now += 0.6  # the first backoff (0.5 s) has passed: one request probes, and fails
    with pytest.raises(SharedStateDown):
        link.call(ping)
    assert len(calls) == 2
    clock.now += 0.6  # the backoff doubled to 1 s
    with pytest.raises(SharedStateDown):
        link.call(ping)
    assert len(calls) == 2
    redis_server.start()
    clock.now += BACKOFF_CAP_SECONDS
    assert link.call(ping) is True and link.up is True
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "unreachable" in warnings[0] and "answers again" in warnings[1]


def test_the_backoff_is_capped(redis_server):
    clock = Clock()
    link = link_to(f"redis://127.0.0.1:{free_port()}/0", clock=clock)  # nobody listens
    for _ in range(10):
        clock.now += BACKOFF_CAP_SECONDS
        with pytest.raises(SharedStateDown):
            link.call(lambda c: c.ping())
    clock.now += BACKOFF_CAP_SECONDS  # never more than the cap between two tries
    assert link.check() is False
    assert link._backoff == BACKOFF_CAP_SECONDS


# -- rate limits -------------------------------------------------------------------------------


def test_two_instances_share_one_limit(redis_server):
    a = RateLimiter(shared=link_to(redis_server.url))
    b = RateLimiter(shared=link_to(redis_server.url))
    decisions = [(a if i % 2 else b).hit("/chat", "5/minute", "192.0.2.7") for i in range(8)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 3
    assert decisions[-1].retry_after >= 1
    assert b.peek("/chat", "5/minute", "192.0.2.8").allowed  # another client is not affected


def test_limits_fall_back_to_memory_while_redis_is_down(redis_server):
    link = link_to(redis_server.url)
    limiter = RateLimiter(shared=link)
    assert limiter.hit("/chat", "3/minute", "192.0.2.9").allowed
    redis_server.kill()
    started = time.perf_counter()
    decisions = [limiter.hit("/chat", "3/minute", "192.0.2.9") for _ in range(4)]
    assert time.perf_counter() - started < 1.0
    # The memory window starts empty: 3 more pass, the 4th is refused.
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert link.up is False


# -- answers -----------------------------------------------------------------------------------


def caches(url: str, patience: float = 10.0) -> tuple[AnswerCache, AnswerCache]:
    def one() -> AnswerCache:
        return AnswerCache(60, 100, patience=patience, shared=SharedAnswers(link_to(url), 60))

    return one(), one()


def test_an_answer_computed_on_one_instance_is_a_hit_on_the_other(redis_server):
    a, b = caches(redis_server.url)
    assert a.get_or_compute("v:0:q", lambda: {"text": "hello"}) == ({"text": "hello"}, False)
    assert b.get_or_compute("v:0:q", lambda: pytest.fail("recomputed")) == ({"text": "hello"}, True)
    stats = SharedAnswers(link_to(redis_server.url), 60).stats()
    assert (stats["hits"], stats["misses"]) == (1, 1)


def test_identical_misses_on_two_instances_compute_once(redis_server):
    a, b = caches(redis_server.url)
    computed = []
    gate = threading.Event()

    def compute():
        computed.append(1)
        gate.wait(5)
        return {"text": "slow"}

    results: list = []

    def ask(cache: AnswerCache) -> None:
        results.append(cache.get_or_compute("v:0:same", compute))

    threads = [threading.Thread(target=ask, args=(c,)) for c in (a, b, a, b)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    gate.set()
    for thread in threads:
        thread.join(10)
    assert len(computed) == 1
    assert sorted(cached for _, cached in results) == [False, True, True, True]
    assert all(value == {"text": "slow"} for value, _ in results)


def test_a_follower_computes_itself_when_the_other_instances_leader_fails(redis_server):
    a, b = caches(redis_server.url)
    value, flight, leads = a.begin("v:0:fails")
    assert leads
    result: list = []
    follower = threading.Thread(
        target=lambda: result.append(b.get_or_compute("v:0:fails", lambda: "b's own"))
    )
    follower.start()
    time.sleep(0.2)
    a.end("v:0:fails", flight, error=RuntimeError("Gemini down"))
    follower.join(5)
    assert result == [("b's own", False)]


def test_answers_come_from_memory_while_redis_is_down(redis_server):
    a, _ = caches(redis_server.url)
    a.get_or_compute("v:0:q", lambda: "kept")
    redis_server.kill()
    started = time.perf_counter()
    assert a.get_or_compute("v:0:q", lambda: pytest.fail("recomputed")) == ("kept", True)
    assert a.get_or_compute("v:0:other", lambda: "computed") == ("computed", False)
    assert time.perf_counter() - started < 1.0


def test_the_epoch_is_only_ever_raised(redis_server):
    shared = SharedAnswers(link_to(redis_server.url), 60)
    assert shared.epoch() == 0
    assert shared.raise_epoch(3) == 3
    assert shared.raise_epoch(2) == 3  # a late, older clear does not move it back
    assert shared.epoch() == 3


# -- configuration and logs --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://cache:6379", "redis://", "redis://host:notaport", "redis://host:6379/cache"],
)
def test_a_bad_redis_url_stops_start_up_naming_the_variable(url):
    with pytest.raises(ConfigError, match="REDIS_URL"):
        Settings.from_env({"REDIS_URL": url})


def test_a_bad_redis_url_is_refused_without_its_password():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"REDIS_URL": "memcache://:hunter2-secret@cache:6379"})
    assert "hunter2-secret" not in str(caught.value)


def test_redis_settings_and_their_defaults():
    assert Settings.from_env({}).redis_url is None
    settings = Settings.from_env({"REDIS_URL": "rediss://:pw@10.0.0.3:6378"})
    assert settings.redis_timeout_ms == 50
    with pytest.raises(ConfigError, match="REDIS_TIMEOUT_MS"):
        Settings.from_env({"REDIS_TIMEOUT_MS": "0"})
    with pytest.raises(ConfigError, match="REDIS_CA_CERT"):
        Settings.from_env(
            {"REDIS_URL": "redis://h:1", "REDIS_CA_CERT": "-----BEGIN CERTIFICATE-----"}
        )


def test_the_redis_password_never_reaches_the_logs(capsys):
    password = "Zq8-memorystore-auth-string-77"
    settings = Settings.from_env({"REDIS_URL": f"rediss://:{password}@10.0.0.3:6378/0"})
    configure_logging(settings)
    logging.getLogger("chatbot.test").warning("connecting to %s", settings.redis_url)
    out = capsys.readouterr().out
    assert "connecting to rediss://:[REDACTED]@10.0.0.3:6378/0" in out
    assert password not in out


def test_a_failed_call_names_no_password(redis_server):
    port = free_port()
    link = link_to(f"redis://:s3cret-pass-word@127.0.0.1:{port}/0")
    with pytest.raises(SharedStateDown) as caught:
        link.call(lambda c: c.ping())
    assert "s3cret-pass-word" not in str(caught.value)
    assert isinstance(caught.value.__cause__, redis.RedisError)
