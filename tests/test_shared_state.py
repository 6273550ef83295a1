"""Shared state on a real redis-server: the link's failure behaviour, fleet-wide limits and
answers between two instances' objects, the epoch, configuration and the log redactor.

Two "instances" here are two sets of objects with their own links to one Redis; the system
test (tests/test_shared_state_system.py) runs two real chat processes.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time

import pytest
import redis
import trustme

from chatbot.answering.answerers import Answer
from chatbot.answering.cache import AnswerCache
from chatbot.answering.service import _decode_answer, _encode_answer
from chatbot.config import Settings
from chatbot.errors import ConfigError
from chatbot.logs import configure_logging
from chatbot.shared_state import RedisLink, SharedAnswers, SharedStateDown, open_link
from chatbot.shared_state.answers import PREFIX
from chatbot.shared_state.link import BACKOFF_CAP_SECONDS
from chatbot.web.ratelimit import RateLimiter
from harness.processes import free_port


def link_to(url: str, timeout_ms: int = 50, clock=time.monotonic) -> RedisLink:
    link = open_link(Settings.from_env({"REDIS_URL": url, "REDIS_TIMEOUT_MS": str(timeout_ms)}))
    assert link is not None
    return RedisLink(link.client, clock=clock)


RESTING = "^Redis is unreachable; retrying after a backoff$"


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
    with pytest.raises(SharedStateDown, match=RESTING):
        link.call(ping)
    assert len(calls) == 2
    clock.now += 0.4  # exactly 1 s after the probe: the next one may go
    with pytest.raises(SharedStateDown, match="^Redis call failed: .*Connection refused"):
        link.call(ping)
    assert len(calls) == 3
    redis_server.start()
    clock.now += BACKOFF_CAP_SECONDS
    assert link.call(ping) is True and link.up is True
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name == "chatbot.shared_state.link"
    ]
    assert len(warnings) == 2, warnings
    # The operator's alerts match these two lines; the first names the cause.
    assert re.fullmatch(
        r"Redis is unreachable \(.*Connection refused.*\): rate limits and cache fall back "
        r"to this instance's memory until it answers again",
        warnings[0],
    ), warnings[0]
    assert warnings[1] == (
        "Redis answers again: rate limits and cache are shared by the fleet again"
    )


def test_while_one_request_probes_the_others_keep_to_memory(redis_server):
    clock = Clock()
    link = link_to(redis_server.url, clock=clock)
    redis_server.kill()
    assert link.check() is False
    clock.now += 0.5
    others: list = []

    def probe(client):
        # Another request arrives while this probe is on its way: it does not call Redis.
        with pytest.raises(SharedStateDown, match=RESTING):
            link.call(lambda c: others.append(1))
        raise redis.ConnectionError("still down")

    with pytest.raises(SharedStateDown):
        link.call(probe)
    assert others == []


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


class Listener:
    """A TCP port that accepts connections and never speaks Redis: it counts them and
    either closes each at once or holds it silent."""

    def __init__(self, *, close: bool) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.close = close
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)
            if self.close:
                conn.close()

    def shut(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_a_redis_that_drops_the_connection_is_tried_once_per_request():
    listener = Listener(close=True)
    try:
        link = link_to(f"redis://127.0.0.1:{listener.port}/0")
        with pytest.raises(SharedStateDown):
            link.call(lambda c: c.ping())
        assert len(listener.accepted) == 1  # no client-side retries: the link's backoff rules
    finally:
        listener.shut()


def test_a_silent_redis_is_given_up_on_after_redis_timeout_ms():
    listener = Listener(close=False)
    try:
        link = open_link(
            Settings.from_env(
                {"REDIS_URL": f"redis://127.0.0.1:{listener.port}/0", "REDIS_TIMEOUT_MS": "250"}
            )
        )
        assert link is not None
        options = link.client.connection_pool.connection_kwargs
        assert (options["socket_timeout"], options["socket_connect_timeout"]) == (0.25, 0.25)
        with pytest.raises(SharedStateDown, match="Timeout"):
            link.call(lambda c: c.ping())
        assert len(listener.accepted) == 1
    finally:
        listener.shut()


def test_rediss_trusts_redis_ca_cert_and_nothing_else(tls_redis_server, redis_ca):
    url = tls_redis_server.url
    ca_pem = redis_ca.cert_pem.bytes().decode()
    trusted = open_link(Settings.from_env({"REDIS_URL": url, "REDIS_CA_CERT": ca_pem}))
    assert trusted is not None and trusted.call(lambda c: c.set("k", "v")) is True
    other_ca = trustme.CA().cert_pem.bytes().decode()
    for env in ({"REDIS_CA_CERT": other_ca}, {}):  # a stranger's CA; the system's CAs
        untrusted = open_link(Settings.from_env({"REDIS_URL": url, **env}))
        assert untrusted is not None
        with pytest.raises(SharedStateDown, match="CERTIFICATE_VERIFY_FAILED"):
            untrusted.call(lambda c: c.get("k"))


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


def test_a_fleet_hit_is_one_round_trip_counted_and_kept_for_an_outage(redis_server):
    a, b = caches(redis_server.url)
    assert b.shared is not None
    a.get_or_compute("v:0:q", lambda: "a's answer")
    client = redis.Redis.from_url(redis_server.url)
    assert client.exists(f"{PREFIX}flight:v:0:q") == 0  # a ended its flight with the answer
    calls: list = []
    real_call = b.shared.link.call
    b.shared.link.call = lambda operation: calls.append(operation) or real_call(operation)
    for _ in range(2):
        assert b.get_or_compute("v:0:q", lambda: pytest.fail("recomputed")) == ("a's answer", True)
    assert len(calls) == 2 and b.hits == 2  # one lookup each, nothing else
    redis_server.kill()  # b remembers what the fleet gave it
    assert b.get_or_compute("v:0:q", lambda: pytest.fail("recomputed")) == ("a's answer", True)


def test_a_fleet_hit_leaves_no_flight_behind_to_serve_it_after_it_expired(redis_server):
    a, b = caches(redis_server.url)
    a.get_or_compute("v:0:q", lambda: "old")
    assert b.get_or_compute("v:0:q", lambda: pytest.fail("recomputed")) == ("old", True)
    redis.Redis.from_url(redis_server.url).delete(f"{PREFIX}answer:v:0:q")  # its TTL ran out
    assert b.get_or_compute("v:0:q", lambda: "new") == ("new", False)


def test_a_failed_leader_stores_nothing_and_its_follower_leads_the_fleet_flight(redis_server):
    a, b = caches(redis_server.url)
    client = redis.Redis.from_url(redis_server.url)
    _, flight, leads = a.begin("v:0:q")
    assert leads
    a.end("v:0:q", flight, error=RuntimeError("Gemini down"))
    assert client.exists(f"{PREFIX}answer:v:0:q", f"{PREFIX}flight:v:0:q") == 0
    assert SharedAnswers(link_to(redis_server.url), 60).stats()["misses"] == 1
    # Again, with b following a's flight when it fails: b then leads, so others follow b.
    _, flight, _ = a.begin("v:0:w")
    threading.Timer(0.2, lambda: a.end("v:0:w", flight, error=RuntimeError("down"))).start()

    def compute():
        assert client.exists(f"{PREFIX}flight:v:0:w") == 1  # b holds the fleet's flight
        return "b's"

    assert b.get_or_compute("v:0:w", compute) == ("b's", False)
    assert client.exists(f"{PREFIX}flight:v:0:w") == 0


def test_a_follower_on_another_instance_gives_up_after_its_patience(redis_server):
    def cache(ttl: int, patience: float | None) -> AnswerCache:
        shared = SharedAnswers(link_to(redis_server.url), ttl)
        return AnswerCache(ttl, 100, patience=patience, shared=shared)

    a, b = cache(3600, None), cache(3600, 0.3)
    a.begin("v:0:q")  # a's leader hangs, holding the fleet's flight for an hour
    assert b.get_or_compute("v:0:q", lambda: "b's") == ("b's", False)  # after 0.3 s
    # Without patience a flight is held for the cache's TTL.
    c = AnswerCache(45, 100, shared=SharedAnswers(link_to(redis_server.url), 45))
    c.begin("v:0:w")
    ttl = redis.Redis.from_url(redis_server.url).pttl(f"{PREFIX}flight:v:0:w")
    assert 44_000 < ttl <= 45_000


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
    client = redis.Redis.from_url(redis_server.url)
    assert client.get(f"{PREFIX}answer:v:0:fails") == b'"b\'s own"'  # b's, not a's failure


def test_an_answer_stored_just_before_the_flight_is_claimed_is_not_computed_again(redis_server):
    a, b = caches(redis_server.url)
    assert a.shared is not None and b.shared is not None
    real_claim = a.shared.claim

    def claim(key, seconds):
        # b's leader stores its answer and ends its flight between a's lookup and claim.
        b.shared.store(key, "b's answer", b.shared.claim(key, seconds))
        return real_claim(key, seconds)

    a.shared.claim = claim
    assert a.get_or_compute("v:0:q", lambda: pytest.fail("recomputed")) == ("b's answer", True)
    assert redis.Redis.from_url(redis_server.url).exists(f"{PREFIX}flight:v:0:q") == 0


def test_a_leader_that_stores_just_after_a_failed_claim_is_followed_not_recomputed(
    redis_server,
):
    a, b = caches(redis_server.url)
    assert a.shared is not None and b.shared is not None
    b_token = b.shared.claim("v:0:q", 10.0)  # another instance leads
    real_claim = a.shared.claim

    def claim(key, seconds):
        taken = real_claim(key, seconds)  # b still leads: a follows
        b.shared.store(key, "b's answer", b_token)  # and b finishes at once
        return taken

    a.shared.claim = claim
    assert a.get_or_compute("v:0:q", lambda: pytest.fail("recomputed")) == ("b's answer", True)
    assert a.shared.link.up  # no failed call on the way


def test_answers_come_from_memory_while_redis_is_down(redis_server):
    a, _ = caches(redis_server.url)
    a.get_or_compute("v:0:q", lambda: "kept")
    redis_server.kill()
    started = time.perf_counter()
    assert a.get_or_compute("v:0:q", lambda: pytest.fail("recomputed")) == ("kept", True)
    assert a.get_or_compute("v:0:other", lambda: "computed") == ("computed", False)
    assert time.perf_counter() - started < 1.0


def test_an_answer_another_code_version_stored_is_a_miss_not_an_error(redis_server):
    shared = SharedAnswers(
        link_to(redis_server.url), 60, encode=_encode_answer, decode=_decode_answer
    )
    cache = AnswerCache(60, 100, patience=10.0, shared=shared)
    mine = Answer(text="mine", sources=[], generator="extractive")
    newer = json.dumps({"text": "newer", "sources": [], "generator": "x", "new_field": 1})
    client = redis.Redis.from_url(redis_server.url)
    client.set(f"{PREFIX}answer:v:0:q", newer)
    assert cache.get_or_compute("v:0:q", lambda: mine) == (mine, False)
    assert shared.lookup("v:0:q") == mine  # the computed answer replaced it
    # A follower whose leader stored such a value computes it itself, at once.
    client.set(f"{PREFIX}answer:v:0:w", "{not json")
    client.set(f"{PREFIX}flight:v:0:w", "someone", px=10_000)
    started = time.perf_counter()
    assert shared.wait("v:0:w", 5.0) is None
    assert time.perf_counter() - started < 1.0
    stats = shared.stats()
    assert (stats["hits"], stats["misses"]) == (1, 1)
    assert PREFIX.startswith("romega:v")  # the layout's version is in every key


def test_a_flight_whose_fleet_lookup_fails_is_ended_not_left_to_block_the_next(redis_server):
    shared = SharedAnswers(link_to(redis_server.url), 60)
    cache = AnswerCache(60, 100, patience=10.0, shared=shared)
    followers = []

    def broken(key):
        followers.append(cache.begin(key))  # a request for the same question meanwhile
        raise RuntimeError("not a Redis failure")

    shared.lookup = broken
    with pytest.raises(RuntimeError):
        cache.begin("v:0:q")
    ((_, flight, leads),) = followers
    assert flight is not None and not leads
    with pytest.raises(RuntimeError, match="not a Redis failure"):
        flight.result(1)  # the follower gets the leader's error, not an empty answer
    shared.lookup = lambda key: None
    value, flight, leads = cache.begin("v:0:q")  # leads: no flight left over to wait for
    assert flight is not None and leads
    assert len(cache) == 0  # nothing was stored for the failure


def test_answers_expire_after_the_cache_ttl_and_flights_after_their_patience(redis_server):
    shared = SharedAnswers(link_to(redis_server.url), 60)
    client = redis.Redis.from_url(redis_server.url)
    token = shared.claim("v:0:q", 2.5)
    assert token is not None and shared.claim("v:0:q", 2.5) is None
    assert 2000 < client.pttl(f"{PREFIX}flight:v:0:q") <= 2500  # a dead leader frees it
    assert shared.claim("v:0:long", 1000.0) is not None
    assert 999_000 < client.pttl(f"{PREFIX}flight:v:0:long") <= 1_000_000
    shared.store("v:0:q", {"text": "a"}, token)
    assert 55 < client.ttl(f"{PREFIX}answer:v:0:q") <= 60
    assert client.exists(f"{PREFIX}flight:v:0:q") == 0  # the flight ended with the answer


def test_a_follower_gets_the_answer_its_leader_stores_counted_as_a_hit(redis_server):
    shared = SharedAnswers(link_to(redis_server.url), 60)
    leader = SharedAnswers(link_to(redis_server.url), 60)
    token = leader.claim("v:0:q", 10.0)
    threading.Timer(0.1, lambda: leader.store("v:0:q", {"text": "led"}, token)).start()
    assert shared.wait("v:0:q", 5.0) == {"text": "led"}
    assert (shared.stats()["hits"], shared.stats()["misses"]) == (1, 1)


def test_no_patience_means_no_waiting_and_no_round_trip(redis_server):
    link = link_to(redis_server.url)
    shared = SharedAnswers(link, 60, clock=lambda: 5.0)  # time stands still
    shared.store("v:0:q", {"text": "there"}, None)
    calls: list = []
    real_call = link.call
    link.call = lambda operation: calls.append(operation) or real_call(operation)
    assert shared.wait("v:0:q", 0.0) is None
    assert calls == []


def test_an_undecodable_answer_is_logged_with_its_key_and_error(redis_server, caplog):
    shared = SharedAnswers(link_to(redis_server.url), 60)
    client = redis.Redis.from_url(redis_server.url)
    client.set(f"{PREFIX}answer:v:0:bad", "{not json")
    client.set(f"{PREFIX}flight:v:0:worse", "someone", px=10_000)
    client.set(f"{PREFIX}answer:v:0:worse", "[unclosed")
    caplog.set_level(logging.WARNING, logger="chatbot.shared_state.answers")
    assert shared.lookup("v:0:bad") is None
    assert shared.wait("v:0:worse", 5.0) is None
    messages = [r.getMessage() for r in caplog.records if r.name == "chatbot.shared_state.answers"]
    for key in ("v:0:bad", "v:0:worse"):
        assert any(
            m.startswith(f"Ignoring an undecodable cached answer {PREFIX}answer:{key}: ")
            and "JSONDecodeError" in m
            for m in messages
        ), messages
    assert shared.stats()["hits"] == 0  # neither counted as a hit


def test_the_hit_rate_is_hits_over_lookups(redis_server):
    shared = SharedAnswers(link_to(redis_server.url), 60)
    assert shared.stats() == {"hits": 0, "misses": 0, "hit_rate": 0.0, "epoch": 0}
    redis.Redis.from_url(redis_server.url).mset(
        {f"{PREFIX}cache:hits": 1, f"{PREFIX}cache:misses": 2}
    )
    assert shared.stats() == {"hits": 1, "misses": 2, "hit_rate": 0.3333, "epoch": 0}


def test_the_epoch_is_only_ever_raised(redis_server):
    shared = SharedAnswers(link_to(redis_server.url), 60)
    assert shared.epoch() == 0
    assert shared.raise_epoch(3) == 3
    assert shared.raise_epoch(2) == 3  # a late, older clear does not move it back
    assert shared.epoch() == 3


def test_garbage_counters_read_as_zero_instead_of_failing_the_stats(redis_server):
    shared = SharedAnswers(link_to(redis_server.url), 60)
    client = redis.Redis.from_url(redis_server.url)
    client.mset(
        {f"{PREFIX}cache:hits": "lots", f"{PREFIX}cache:misses": "3", f"{PREFIX}cache-epoch": "x"}
    )
    assert shared.stats() == {"hits": 0, "misses": 3, "hit_rate": 0.0, "epoch": 0}
    assert shared.epoch() == 0


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
