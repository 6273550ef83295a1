"""The answer cache: TTL with a fake clock, counters, single-flight, and only successes stored."""

from __future__ import annotations

import threading
import time

import pytest

from chatbot.answering.cache import AnswerCache, cache_key, normalize


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
    clock.now += 61
    assert cache.stats()["expired_entries"] == 1 and cache.stats()["valid_entries"] == 0
    assert cache.get_or_compute("k", compute) == ("answer", False)
    assert len(calls) == 2
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["hit_rate"]) == (1, 2, round(1 / 3, 4))
    assert stats["cache_ttl_seconds"] == 60


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


def test_clear_and_bounded_size():
    cache = AnswerCache(ttl=60, max_entries=3)
    for i in range(5):
        cache.get_or_compute(f"k{i}", lambda: "v")
    assert cache.stats()["total_entries"] == 3
    cache.clear()
    assert len(cache) == 0
