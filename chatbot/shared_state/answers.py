"""The fleet's answer cache in Redis: answers, single flights, the cache epoch, counters.

    romega:answer:<key>     the answer as JSON, with the cache TTL (key: snapshot version,
                            epoch and md5 of the question, chatbot/answering/cache.py)
    romega:flight:<key>     who computes that answer now: SET NX PX, a random token, expiring
                            after the followers' patience, so a leader that died frees it
    romega:cache-epoch      the cache epoch; the admin's clear raises it to the bucket's
    romega:cache:hits       the fleet's counters (GET /cache/stats)
    romega:cache:misses

Every method goes through the ``RedisLink`` and so raises ``SharedStateDown`` when Redis
fails; the caller (chatbot/answering/cache.py) then uses its own memory.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from chatbot.shared_state.link import RedisLink

__all__ = ["SharedAnswers"]
PREFIX = "romega:"
EPOCH_KEY = f"{PREFIX}cache-epoch"
HITS_KEY = f"{PREFIX}cache:hits"
MISSES_KEY = f"{PREFIX}cache:misses"
WAIT_POLL_SECONDS = 0.02
# The value if there is one, counted as a hit: one round trip for the common case.
LOOKUP = """
local value = redis.call('GET', KEYS[1])
if value then redis.call('INCR', KEYS[2]) end
return value
"""
# Raise the epoch to ARGV[1] unless it is higher already (two clears may land out of order).
RAISE_EPOCH = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local wanted = tonumber(ARGV[1])
if wanted > current then redis.call('SET', KEYS[1], wanted) return wanted end
return current
"""
# Delete the flight lock only if this leader still holds it (it may have expired and been
# taken by another instance meanwhile).
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _answer_key(key: str) -> str:
    return f"{PREFIX}answer:{key}"


def _flight_key(key: str) -> str:
    return f"{PREFIX}flight:{key}"


class SharedAnswers:
    """Answers shared by every instance, stored as ``encode``d JSON for ``ttl`` seconds."""

    def __init__(
        self,
        link: RedisLink,
        ttl: int,
        *,
        encode: Callable[[Any], str] = json.dumps,
        decode: Callable[[bytes], Any] = json.loads,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.link = link
        self.ttl = ttl
        self._encode = encode
        self._decode = decode
        self._clock = clock
        self._sleep = sleep
        client = link.client
        self._lookup = client.register_script(LOOKUP)
        self._raise_epoch = client.register_script(RAISE_EPOCH)
        self._release = client.register_script(RELEASE)

    # -- the epoch ------------------------------------------------------------------------

    def epoch(self) -> int:
        """The fleet's cache epoch (0 when never set, e.g. after Redis restarted)."""
        raw = self.link.call(lambda client: client.get(EPOCH_KEY))
        try:
            return max(0, int(raw or 0))
        except ValueError:  # only our own scripts write it; a stranger's value counts as 0
            return 0

    def raise_epoch(self, epoch: int) -> int:
        """Make the epoch at least ``epoch`` (the bucket's, just bumped); the epoch now."""
        return int(self.link.call(lambda client: self._raise_epoch([EPOCH_KEY], [epoch])))

    # -- answers and flights ----------------------------------------------------------------

    def lookup(self, key: str) -> Any | None:
        """The stored answer (counted as a fleet hit), or None."""
        raw = self.link.call(lambda client: self._lookup([_answer_key(key), HITS_KEY]))
        return None if raw is None else self._decode(raw)

    def claim(self, key: str, seconds: float) -> str | None:
        """Lead the fleet's flight for ``key`` for at most ``seconds``: a token, or None if
        another instance leads it."""
        token = uuid.uuid4().hex
        taken = self.link.call(
            lambda client: client.set(
                _flight_key(key), token, nx=True, px=max(1, int(seconds * 1000))
            )
        )
        return token if taken else None

    def wait(self, key: str, patience: float) -> Any | None:
        """The answer another instance is computing, once it is stored (a fleet hit).

        None when its flight ends without one (the leader failed or vanished) or after
        ``patience`` seconds: the caller then computes it itself.
        """
        deadline = self._clock() + patience
        answer_key, flight_key = _answer_key(key), _flight_key(key)
        while self._clock() < deadline:
            raw, leading = self.link.call(
                lambda client: (
                    client.pipeline(transaction=False).get(answer_key).exists(flight_key).execute()
                )
            )
            if raw is not None:
                self.link.call(lambda client: client.incr(HITS_KEY))
                return self._decode(raw)
            if not leading:
                return None
            self._sleep(WAIT_POLL_SECONDS)
        return None

    def store(self, key: str, value: Any, token: str | None) -> None:
        """Store a computed answer (a fleet miss) and end this leader's flight."""
        encoded = self._encode(value)

        def write(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            pipe.set(_answer_key(key), encoded, ex=self.ttl)
            pipe.incr(MISSES_KEY)
            pipe.execute()
            if token is not None:
                self._release([_flight_key(key)], [token])

        self.link.call(write)

    def abandon(self, key: str, token: str | None) -> None:
        """End this leader's flight without an answer (a fleet miss): followers compute."""

        def release(client: Any) -> None:
            client.incr(MISSES_KEY)
            if token is not None:
                self._release([_flight_key(key)], [token])

        self.link.call(release)

    # -- stats ------------------------------------------------------------------------------

    def stats(self) -> dict:
        """The fleet's counters and epoch, as Redis holds them."""
        counters = self.link.call(lambda client: client.mget(HITS_KEY, MISSES_KEY, EPOCH_KEY))
        hits, misses, epoch = counters
        hits, misses = int(hits or 0), int(misses or 0)
        lookups = hits + misses
        return {
            "hits": hits,
            "misses": misses,
            "hit_rate": round(hits / lookups, 4) if lookups else 0.0,
            "epoch": int(epoch or 0),
        }
