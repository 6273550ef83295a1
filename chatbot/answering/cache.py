"""The per-instance answer cache: a TTLCache behind a lock, with single-flight misses.

Keys are md5 of the normalised question, scoped by snapshot version and cache epoch, so a
new snapshot or an admin "clear" never serves an old answer. When several threads miss on
the same key at once, one computes and the others wait for its answer: one Gemini call.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cachetools import Cache, TTLCache

__all__ = ["AnswerCache", "cache_key", "normalize"]


def normalize(question: str) -> str:
    """Lower-case and collapse whitespace, so trivially different spellings share an entry."""
    return " ".join(question.lower().split())


def cache_key(question: str, version: str, epoch: int) -> str:
    """md5 of the normalised question, scoped by snapshot version and cache epoch."""
    digest = hashlib.md5(normalize(question).encode("utf-8"), usedforsecurity=False)
    return f"{version}:{epoch}:{digest.hexdigest()}"


@dataclass
class _Flight:
    done: threading.Event
    value: Any = None
    error: BaseException | None = None


class AnswerCache:
    """Thread-safe TTL cache of successful answers with hit/miss counters."""

    def __init__(
        self, ttl: int, max_entries: int, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self._cache: TTLCache = TTLCache(maxsize=max_entries, ttl=ttl, timer=timer)
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}
        self.hits = 0
        self.misses = 0

    def get_or_compute(
        self, key: str, compute: Callable[[], Any], use_cache: bool = True
    ) -> tuple[Any, bool]:
        """Return ``(value, cached)``; ``compute`` runs at most once per key at a time.

        ``use_cache=False`` skips the lookup but still stores the fresh value. Exceptions
        from ``compute`` are not cached; threads waiting on the failed flight get the error.
        That is where this differs from cachetools' ``cached(..., condition=...)``: there
        the waiters would each call ``compute`` again after the leader fails, so a Gemini
        outage would cost one failing call per waiting visitor instead of one in all.
        """
        with self._lock:
            if use_cache:
                try:
                    value = self._cache[key]
                except KeyError:
                    pass
                else:
                    self.hits += 1
                    return value, True
                flight = self._flights.get(key)
                if flight is not None:
                    self.hits += 1
                    leader = False
                else:
                    self.misses += 1
                    flight = self._flights[key] = _Flight(threading.Event())
                    leader = True
            else:
                self.misses += 1
                flight, leader = _Flight(threading.Event()), True
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value, True
        try:
            flight.value = compute()
        except BaseException as exc:
            flight.error = exc
            raise
        else:
            with self._lock:
                self._cache[key] = flight.value
            return flight.value, False
        finally:
            with self._lock:
                if self._flights.get(key) is flight:
                    del self._flights[key]
            flight.done.set()

    def clear(self) -> None:
        """Drop every entry (counters are kept: they describe the instance's life)."""
        with self._lock:
            self._cache.clear()

    def __len__(self) -> int:
        with self._lock:
            return sum(1 for _ in self._cache)

    def stats(self) -> dict:
        """The fields of GET /cache/stats."""
        with self._lock:
            total = Cache.__len__(self._cache)  # held in memory, expired or not
            valid = sum(1 for _ in self._cache)  # TTLCache iterates live keys only
            hits, misses = self.hits, self.misses
        lookups = hits + misses
        return {
            "total_entries": total,
            "valid_entries": valid,
            "expired_entries": total - valid,
            "cache_ttl_seconds": self.ttl,
            "hits": hits,
            "misses": misses,
            "hit_rate": round(hits / lookups, 4) if lookups else 0.0,
        }
