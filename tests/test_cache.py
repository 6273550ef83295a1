"""The answer cache: TTL with a fake clock, counters, single-flight, and only successes stored."""

from __future__ import annotations

import threading
import time
import types

import pytest

from chatbot.answering.cache import AnswerCache, Flight, cache_key, normalize
from chatbot.answering.service import ChatService
from chatbot.errors import GenerationUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_keys_normalise_case_and_whitespace_and_scope_by_version_and_epoch():
    assert normalize("  What  SERVICES\n do you offer? ") == "what services do you offer?"
    key = cache_key("What services?", "v1", 0)
    assert key == cache_key("  what   services? ", "v1", 0)
    assert key != cache_key("What services?", "v2", 0)
    assert key != cache_key("What services?", "v1", 1)


def test_hit_miss_and_ttl_expiry_with_a_fake_clock():
    clock = Clock()
    cache = AnswerCache(ttl=60, max_entries=10, timer=clock)
    calls = []
    compute = lambda: calls.append(1) or "answer"  # noqa: E731
    assert cache.get_or_compute("k", compute) == ("answer", False)
    assert cache.get_or_compute("k", compute) == ("answer", True)
    assert cache.get_or_compute("k", compute) == ("answer", True)
    assert cache.hits == 2
    clock.now += 61
    assert cache.stats()["expired_entries"] == 1 and cache.stats()["valid_entries"] == 0
    assert cache.get_or_compute("k", compute) == ("answer", False)
    assert len(calls) == 2
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["hit_rate"]) == (2, 2, 0.5)
    assert stats["cache_ttl_seconds"] == 60
    cache.get_or_compute("k2", compute)
    cache.get_or_compute("k3", compute)
    clock.now += 30
    cache.get_or_compute("k4", compute)
    clock.now += 31  # k, k2, k3 expired; k4 has 29 s left
    assert len(cache) == 1
    stats = cache.stats()
    assert (stats["total_entries"], stats["valid_entries"], stats["expired_entries"]) == (4, 1, 3)


def test_use_cache_false_skips_the_lookup_but_refreshes_the_entry():
    cache = AnswerCache(ttl=60, max_entries=10)
    cache.get_or_compute("k", lambda: "old")
    assert cache.get_or_compute("k", lambda: "new", use_cache=False) == ("new", False)
    assert cache.get_or_compute("k", lambda: "unused") == ("new", True)


def test_failures_are_not_cached():
    cache = AnswerCache(ttl=60, max_entries=10)
    with pytest.raises(RuntimeError):
        cache.get_or_compute("k", lambda: (_ for _ in ()).throw(RuntimeError("down")))
    assert cache.get_or_compute("k", lambda: "ok") == ("ok", False)


def test_concurrent_identical_misses_compute_once():
    cache = AnswerCache(ttl=60, max_entries=10)
    calls = []
    gate = threading.Event()

    def slow():
        calls.append(1)
        gate.wait(5)
        return "answer"

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_compute("k", slow)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    time.sleep(0.2)  # let every thread reach the cache before the leader finishes
    gate.set()
    for t in threads:
        t.join(5)
    assert len(calls) == 1
    assert sorted(r[1] for r in results) == [False] + [True] * 7
    assert {r[0] for r in results} == {"answer"}
    assert (cache.stats()["hits"], cache.stats()["misses"]) == (7, 1)  # followers are hits


def test_clear_and_bounded_size():
    cache = AnswerCache(ttl=60, max_entries=3)
    for i in range(5):
        cache.get_or_compute(f"k{i}", lambda: "v")
    assert cache.stats()["total_entries"] == 3
    cache.clear()
    assert len(cache) == 0


def _concurrently(calls: list, gate: threading.Event, *requests) -> list:
    """Run each ``request`` (a callable) in its own thread, all parked on ``gate`` together."""
    results: list = []
    lock = threading.Lock()

    def run(request):
        value = request()
        with lock:
            results.append(value)

    threads = [threading.Thread(target=run, args=(request,)) for request in requests]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:  # the leader is computing
        time.sleep(0.01)
    time.sleep(0.2)  # let every other thread reach the cache before the leader finishes
    gate.set()
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads)
    return results


def _slow(calls: list, gate: threading.Event, value: str = "fresh"):
    def compute():
        calls.append(1)
        gate.wait(5)
        return value

    return compute


def test_concurrent_use_cache_false_requests_share_one_flight():
    cache = AnswerCache(ttl=60, max_entries=10)
    calls: list = []
    gate = threading.Event()
    compute = _slow(calls, gate)
    results = _concurrently(
        calls, gate, *[lambda: cache.get_or_compute("k", compute, use_cache=False)] * 10
    )
    assert len(calls) == 1  # one Gemini call, not ten
    assert sorted(r[1] for r in results) == [False] + [True] * 9
    assert {r[0] for r in results} == {"fresh"}
    # The fresh answer is stored, and a later normal request is served from it.
    assert cache.get_or_compute("k", lambda: "unused") == ("fresh", True)
    assert (cache.stats()["misses"], len(calls)) == (1, 1)


def test_use_cache_false_skips_a_stored_answer_but_follows_a_fresh_flight():
    cache = AnswerCache(ttl=60, max_entries=10)
    cache.get_or_compute("k", lambda: "old")
    calls: list = []
    gate = threading.Event()
    compute = _slow(calls, gate)
    results = _concurrently(
        calls,
        gate,
        *[lambda: cache.get_or_compute("k", compute, use_cache=False)] * 2,
    )
    assert len(calls) == 1
    # Neither got the stored "old" answer: one computed, the other followed that computation.
    assert sorted(results) == [("fresh", False), ("fresh", True)]
    assert cache.get_or_compute("k", lambda: "unused") == ("fresh", True)


def test_a_normal_request_follows_a_use_cache_false_flight_when_nothing_is_stored():
    cache = AnswerCache(ttl=60, max_entries=10)
    calls: list = []
    gate = threading.Event()
    compute = _slow(calls, gate)
    results = _concurrently(
        calls,
        gate,
        lambda: cache.get_or_compute("k", compute, use_cache=False),
        *[lambda: cache.get_or_compute("k", compute)] * 3,
    )
    assert len(calls) == 1
    assert sorted(r[1] for r in results) == [False, True, True, True]
    assert {r[0] for r in results} == {"fresh"}


def test_a_failed_use_cache_false_flight_fails_its_followers_and_stores_nothing():
    cache = AnswerCache(ttl=60, max_entries=10)
    calls: list = []
    gate = threading.Event()

    def failing():
        calls.append(1)
        gate.wait(5)
        raise RuntimeError("down")

    def request():
        try:
            return cache.get_or_compute("k", failing, use_cache=False)
        except RuntimeError as exc:
            return str(exc)

    results = _concurrently(calls, gate, *[request] * 5)
    assert len(calls) == 1 and results == ["down"] * 5
    assert cache.get_or_compute("k", lambda: "ok", use_cache=False) == ("ok", False)


def test_followers_give_up_on_a_leader_that_never_ends_and_its_flight_is_forgotten():
    """A leader that hung or never started (a stream never read) cannot block a question."""
    cache = AnswerCache(ttl=60, max_entries=10, patience=0.2)
    _, stuck, leads = cache.begin("k")
    assert leads and stuck is not None
    with pytest.raises(GenerationUnavailable) as caught:
        cache.get_or_compute("k", lambda: "unused")
    assert caught.value.detail == (
        "the answer being written for the same question took longer than 0.2 s"
    )
    with pytest.raises(GenerationUnavailable):
        list(cache.follow("k", stuck))  # streaming followers too
    assert cache.get_or_compute("k", lambda: "fresh") == ("fresh", False)  # a new leader
    cache.end("k", stuck, "late")  # a leader that finishes late still stores its answer
    assert cache.get_or_compute("k", lambda: "unused") == ("late", True)


def test_the_services_epoch_never_goes_back_when_two_requests_race():
    """A request that read the bucket's older epoch cannot overwrite a newer one seen meanwhile."""
    later_done = threading.Event()

    class Follower:
        reads = 0

        @property
        def epoch(self) -> int:
            self.reads += 1
            if self.reads == 1:  # the first request reads 5, then stalls before storing it
                later_done.wait(0.5)
                return 5
            return 7

    service = types.SimpleNamespace(
        fleet=None, follower=Follower(), _epoch_seen=0, _epoch_lock=threading.Lock()
    )
    first = threading.Thread(target=lambda: ChatService._epoch(service))
    first.start()
    time.sleep(0.1)
    second = threading.Thread(target=lambda: (ChatService._epoch(service), later_done.set()))
    second.start()
    first.join(5)
    second.join(5)
    assert service._epoch_seen == 7


def test_a_streaming_follower_gets_the_head_and_each_chunk_as_they_come_without_spinning():
    flight = Flight()
    wakes = 0
    real_news = flight._news

    def news(sent, sent_head):
        nonlocal wakes
        wakes += 1
        return real_news(sent, sent_head)

    flight._news = news
    events = flight.follow(timeout=10)
    flight.start({"sources": ["a.md"]})
    assert next(events) == ("head", {"sources": ["a.md"]})
    flight.publish("Hello")
    assert next(events) == ("chunk", "Hello")  # before the flight ends
    got: list = []
    follower = threading.Thread(target=lambda: got.extend(events))
    follower.start()
    time.sleep(0.2)  # the follower waits for news, checking only when woken
    assert wakes < 20, wakes
    flight.publish(" world")
    flight._end("Hello world", None)
    follower.join(10)
    assert got == [("chunk", " world"), ("done", "Hello world")]


def test_a_streaming_follower_of_a_leader_that_never_ends_gives_up_after_patience():
    cache = AnswerCache(ttl=60, max_entries=10, patience=0.2)
    _, stuck, leads = cache.begin("k")
    assert leads and stuck is not None
    _, same, follows = cache.begin("k")
    assert same is stuck and not follows
    with pytest.raises(GenerationUnavailable) as caught:
        list(cache.follow("k", stuck))
    assert caught.value.detail.endswith("took longer than 0.2 s")
    _, fresh, leads = cache.begin("k")  # the stuck flight is forgotten: a new leader
    assert leads and fresh is not stuck


def test_without_patience_a_follower_waits_for_its_leader():
    cache = AnswerCache(ttl=60, max_entries=10)
    _, flight, _ = cache.begin("k")
    threading.Timer(0.1, lambda: cache.end("k", flight, "answer")).start()
    assert list(cache.follow("k", flight)) == [("done", "answer")]
    assert cache.get_or_compute("k", lambda: "unused") == ("answer", True)
    assert AnswerCache(ttl=60, max_entries=10).stats()["hit_rate"] == 0.0
