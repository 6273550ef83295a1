"""The fleet's answer cache in Redis: answers, single flights, the cache epoch, counters.

    romega:v1:answer:<key>  the answer as JSON, with the cache TTL (key: snapshot version,
                            epoch and md5 of the question, chatbot/answering/cache.py)
    romega:v1:flight:<key>  who computes that answer now: SET NX PX, a random token, expiring
                            after the followers' patience, so a leader that died frees it
    romega:v1:cache-epoch   the cache epoch; the admin's clear raises it to the bucket's
    romega:v1:cache:hits    the fleet's counters (GET /cache/stats)
    romega:v1:cache:misses

``v1`` is the layout of these values: a version that changes it (say, a new field in the
stored answer) raises it, so two versions of the code in one fleet do not read each other's
answers. A value that does not decode anyway (a stranger's, or a version that forgot) is a
miss, never an error: its key is overwritten by the next answer computed for it.

Every method goes through the ``RedisLink`` and so raises ``SharedStateDown`` when Redis
fails; the caller (chatbot/answering/cache.py) then uses its own memory.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from chatbot.shared_state.link import RedisLink

__all__ = ["SharedAnswers"]
logger = logging.getLogger(__name__)
PREFIX = "romega:v1:"  # raise the version when the stored values change (see above)
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
        return _count(self.link.call(lambda client: client.get(EPOCH_KEY)))

    def raise_epoch(self, epoch: int) -> int:
        """Make the epoch at least ``epoch`` (the bucket's, just bumped); the epoch now."""
        return int(self.link.call(lambda client: self._raise_epoch([EPOCH_KEY], [epoch])))

    # -- answers and flights ----------------------------------------------------------------

    def lookup(self, key: str) -> Any | None:
        """The stored answer (counted as a fleet hit), or None."""
        raw = self.link.call(lambda client: self._lookup([_answer_key(key), HITS_KEY]))
        if raw is None:
            return None
        value = self._decoded(key, raw)
        if value is None:  # the script counted a hit that was none: the compute counts a miss
            self.link.call(lambda client: client.decr(HITS_KEY))
        return value

    def _decoded(self, key: str, raw: bytes) -> Any | None:
        """``raw`` decoded, or None (a miss) when it does not decode."""
        try:
            return self._decode(raw)
        except (ValueError, TypeError, KeyError) as exc:
            logger.warning("Ignoring an undecodable cached answer %s: %r", _answer_key(key), exc)
            return None

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
            # The flight first: its leader stores the answer before it ends the flight, so
            # once the flight is seen ended, the GET after it sees the answer if there is one.
            leading, raw = self.link.call(
                lambda client: (
                    client.pipeline(transaction=False).exists(flight_key).get(answer_key).execute()
                )
            )
            if raw is not None:
                value = self._decoded(key, raw)
                if value is not None:
                    self.link.call(lambda client: client.incr(HITS_KEY))
                return value
            if not leading:
                return None
            self._sleep(WAIT_POLL_SECONDS)
        return None

    def release(self, key: str, token: str) -> None:
        """End this leader's flight without counting anything (the answer was there)."""
        self.link.call(lambda client: self._release([_flight_key(key)], [token]))

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
        hits, misses, epoch = (_count(raw) for raw in counters)
        lookups = hits + misses
        return {
            "hits": hits,
            "misses": misses,
            "hit_rate": round(hits / lookups, 4) if lookups else 0.0,
            "epoch": epoch,
        }


def _count(raw: bytes | None) -> int:
    """A counter or the epoch as Redis holds it; 0 when missing or not a whole number >= 0
    (only our own code writes them; a stranger's value must not fail GET /cache/stats)."""
    try:
        return max(0, int(raw or 0))
    except ValueError:
        return 0
