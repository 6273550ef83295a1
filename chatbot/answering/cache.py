"""The answer cache: a TTLCache behind a lock, with single-flight misses; shared in Redis
when REDIS_URL is set.

Keys are md5 of the normalised question, scoped by snapshot version and cache epoch, so a
new snapshot or an admin "clear" never serves an old answer. When several threads miss on
the same key at once, one computes and the others wait for its answer: one Gemini call.
That holds for ``use_cache=False`` requests too: they skip the stored answer, not the flight.

With ``shared`` (chatbot/shared_state/answers.py) stored answers come from Redis while it
answers, and identical misses on different instances share one flight too: the instance
whose thread leads here claims the fleet's flight, or waits for the answer another instance
is computing (followers on the same instance follow it as above). Answers are also kept in
this instance's memory, which serves them only while Redis is unreachable; that is safe
after a clear because keys carry the epoch, which never goes back (chatbot/answering/
service.py).
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from cachetools import Cache, TTLCache

from chatbot.errors import GenerationUnavailable
from chatbot.shared_state import SharedAnswers, SharedStateDown

__all__ = ["AnswerCache", "Flight", "cache_key", "normalize"]


def normalize(question: str) -> str:
    """Lower-case and collapse whitespace, so trivially different spellings share an entry."""
    return " ".join(question.lower().split())


def cache_key(question: str, version: str, epoch: int) -> str:
    """md5 of the normalised question, scoped by snapshot version and cache epoch."""
    digest = hashlib.md5(normalize(question).encode("utf-8"), usedforsecurity=False)
    return f"{version}:{epoch}:{digest.hexdigest()}"


class Flight:
    """One answer being computed: what followers wait on, chunk by chunk if it streams.

    The leader may ``start`` it with data known before the answer (the sources), ``publish``
    the answer's text as it is written, and ends it with ``finish`` or ``fail``. Followers
    either wait for the whole value (``result``) or replay the start and the chunks as they
    arrive (``follow``).
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.head: Any = None
        self.chunks: list[str] = []
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.fleet_token: str | None = None  # the fleet's flight lock, when this one holds it

    def start(self, head: Any) -> None:
        """What followers learn before any chunk (e.g. the sources)."""
        with self._changed:
            self.head = head
            self._changed.notify_all()

    def publish(self, chunk: str) -> None:
        """One more piece of the answer's text."""
        with self._changed:
            self.chunks.append(chunk)
            self._changed.notify_all()

    def _end(self, value: Any, error: BaseException | None) -> None:
        with self._changed:
            if self.done:  # settled once only (a leader may end a flight already abandoned)
                return
            self.value, self.error, self.done = value, error, True
            self._changed.notify_all()

    def result(self, timeout: float | None = None) -> Any:
        """The finished value; the leader's error if it failed; TimeoutError past ``timeout``."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.done, timeout):
                raise TimeoutError("the flight did not finish in time")
        if self.error is not None:
            raise self.error
        return self.value

    def _news(self, sent: int, sent_head: bool) -> bool:
        return self.done or len(self.chunks) > sent or (self.head is not None and not sent_head)

    def follow(self, timeout: float | None = None) -> Iterator[tuple[str, Any]]:
        """``("head", head)``, then ``("chunk", text)`` as they come, then ``("done", value)``.

        Raises the leader's error after the chunks it published before failing, and
        TimeoutError when the whole flight takes longer than ``timeout``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        sent_head, sent = False, 0
        while True:
            with self._changed:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                news = functools.partial(self._news, sent, sent_head)
                if not self._changed.wait_for(news, left):
                    raise TimeoutError("the flight did not finish in time")
                head, chunks, done = self.head, self.chunks[sent:], self.done
                error, value = self.error, self.value
            if head is not None and not sent_head:
                sent_head = True
                yield "head", head
            for chunk in chunks:
                yield "chunk", chunk
            sent += len(chunks)
            if done:
                if error is not None:
                    raise error
                yield "done", value
                return


class AnswerCache:
    """Thread-safe TTL cache of successful answers with hit/miss counters and single flights.

    When several requests miss on the same key at once, one leads (computes) and the others
    follow its ``Flight``: one Gemini call, whether they stream or not. Errors are not cached;
    followers of a failed flight get the leader's error. That is where this differs from
    cachetools' ``cached(..., condition=...)``: there the waiters would each compute again
    after the leader fails, so a Gemini outage would cost one failing call per waiting
    visitor instead of one in all.
    """

    def __init__(
        self,
        ttl: int,
        max_entries: int,
        timer: Callable[[], float] = time.monotonic,
        patience: float | None = None,
        shared: SharedAnswers | None = None,
    ) -> None:
        """``patience``: the longest a follower waits for its leader before giving up;
        ``shared``: the fleet's cache in Redis."""
        self.ttl = ttl
        self.patience = patience
        self.shared = shared
        self._cache: TTLCache = TTLCache(maxsize=max_entries, ttl=ttl, timer=timer)
        self._lock = threading.Lock()
        self._flights: dict[str, Flight] = {}
        self.hits = 0
        self.misses = 0

    def begin(self, key: str, use_cache: bool = True) -> tuple[Any, Flight | None, bool]:
        """``(value, None, False)`` on a hit, else ``(None, flight, leads)``.

        The leader must end its flight with ``end``. ``use_cache=False`` skips the lookup of a
        stored answer (its value still refreshes the entry), but not the flights: a flight in
        progress is a fresh computation already, so it is followed, and a new one is
        registered like any other, so identical requests arriving meanwhile (with or without
        ``use_cache``) follow it instead of each calling Gemini. A normal request still takes
        a stored answer first, if there is one.
        """
        with self._lock:
            if use_cache and not self._fleet_up() and key in self._cache:
                self.hits += 1
                return self._cache[key], None, False
            flight = self._flights.get(key)
            if flight is not None:
                self.hits += 1
                return None, flight, False
            flight = self._flights[key] = Flight()
        value = self._from_fleet(key, flight, use_cache)
        with self._lock:
            if value is None:
                self.misses += 1
                return None, flight, True
            self.hits += 1
            self._cache[key] = value
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight._end(value, None)
        return value, None, False

    def _fleet_up(self) -> bool:
        return self.shared is not None and self.shared.link.up

    def _from_fleet(self, key: str, flight: Flight, use_cache: bool) -> Any:
        """The fleet's answer for ``key``: stored, or computed meanwhile by another instance.

        None when this instance is to compute it, holding the fleet's flight (its token on
        ``flight``) unless Redis failed or the wait ran out. A ``use_cache=False`` request
        waits for nobody: it computes, leading the fleet's flight if it is free.
        """
        if self.shared is None:
            return None
        patience = self.patience if self.patience is not None else float(self.ttl)
        try:
            if use_cache and (value := self.shared.lookup(key)) is not None:
                return value
            flight.fleet_token = self.shared.claim(key, patience)
            if flight.fleet_token is not None or not use_cache:
                return None
            value = self.shared.wait(key, patience)
            if value is None:  # its leader failed or vanished: lead, if nobody else does now
                flight.fleet_token = self.shared.claim(key, patience)
            return value
        except SharedStateDown:  # Redis just failed: this instance's own answer, if it has one
            if not use_cache:
                return None
            with self._lock:
                return self._cache.get(key)

    def end(
        self, key: str, flight: Flight, value: Any = None, error: BaseException | None = None
    ) -> None:
        """Settle a flight this caller leads: store ``value`` unless it failed with ``error``."""
        self._end_fleet(key, flight, value, error)
        with self._lock:
            if error is None:
                self._cache[key] = value
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight._end(value, error)

    def _end_fleet(self, key: str, flight: Flight, value: Any, error: BaseException | None) -> None:
        """Store the answer in Redis (or just end the fleet's flight if it failed)."""
        if self.shared is None:
            return
        try:
            if error is None:
                self.shared.store(key, value, flight.fleet_token)
            else:
                self.shared.abandon(key, flight.fleet_token)
        except SharedStateDown:
            pass  # the flight lock expires by itself; the answer stays in this instance

    def follow(self, key: str, flight: Flight) -> Iterator[tuple[str, Any]]:
        """``flight.follow()``, given up after ``patience`` (see ``_abandon``)."""
        try:
            yield from flight.follow(self.patience)
        except TimeoutError:
            raise self._abandon(key, flight) from None

    def _abandon(self, key: str, flight: Flight) -> GenerationUnavailable:
        """Forget a flight that outlived ``patience`` (its leader hung or never started), so
        later requests lead a new one; its followers get this error."""
        error = GenerationUnavailable(
            detail="the answer being written for the same question "
            f"took longer than {self.patience:g} s"
        )
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight._end(None, error)
        return error

    def get_or_compute(
        self, key: str, compute: Callable[[], Any], use_cache: bool = True
    ) -> tuple[Any, bool]:
        """Return ``(value, cached)``; ``compute`` runs at most once per key at a time."""
        value, flight, leads = self.begin(key, use_cache)
        if flight is None:
            return value, True
        if not leads:
            try:
                return flight.result(self.patience), True
            except TimeoutError:
                raise self._abandon(key, flight) from None
        try:
            value = compute()
        except BaseException as exc:
            self.end(key, flight, error=exc)
            raise
        self.end(key, flight, value)
        return value, False

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
