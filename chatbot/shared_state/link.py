"""The one Redis connection of an instance, and what happens when Redis fails.

Every call has REDIS_TIMEOUT_MS to connect and to answer, and is never retried by the
client: a failure raises ``SharedStateDown`` at once and the caller falls back to this
instance's own memory (limits and cache). The first failure logs one WARNING and marks the
link down; while it is down nobody calls Redis, except one request after each backoff
interval (0.5 s, doubling, at most BACKOFF_CAP_SECONDS), whose success marks it up again
with one more WARNING. So an outage costs visitors at most one bounded call per interval,
and shared state is back within BACKOFF_CAP_SECONDS (plus one request) of Redis returning.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from chatbot.config import Settings

__all__ = ["BACKOFF_CAP_SECONDS", "RedisLink", "SharedStateDown", "open_link"]
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 5.0
logger = logging.getLogger(__name__)
T = TypeVar("T")


class SharedStateDown(Exception):
    """Redis failed or is resting after a failure: use this instance's own memory instead."""


class RedisLink:
    """A Redis client whose calls are bounded, with up/down state and reconnect backoff."""

    def __init__(self, client: redis.Redis, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self._clock = clock
        self._lock = threading.Lock()
        self._up = True
        self._backoff = BACKOFF_FIRST_SECONDS
        self._next_try = float("-inf")

    @property
    def up(self) -> bool:
        """False from a failed call until a later call succeeds."""
        return self._up

    def call(self, operation: Callable[[redis.Redis], T]) -> T:
        """``operation(client)``; SharedStateDown if it fails or Redis is resting."""
        if not self._may_try():
            raise SharedStateDown("Redis is unreachable; retrying after a backoff")
        try:
            result = operation(self.client)
        except (redis.RedisError, OSError) as exc:
            self._failed(exc)
            raise SharedStateDown(f"Redis call failed: {exc}") from exc
        if not self._up:
            self._recovered()
        return result

    def check(self) -> bool:
        """Ping Redis (unless it is resting after a failure); whether it is up."""
        try:
            self.call(lambda client: client.ping())
        except SharedStateDown:
            pass
        return self._up

    def _may_try(self) -> bool:
        if self._up:
            return True
        with self._lock:
            now = self._clock()
            if self._up or now >= self._next_try:
                # This caller probes; the others keep to their memory until the next interval.
                self._next_try = now + self._backoff
                return True
            return False

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            if self._up:
                self._up = False
                self._backoff = BACKOFF_FIRST_SECONDS
                logger.warning(
                    "Redis is unreachable (%s): rate limits and cache fall back to this "
                    "instance's memory until it answers again",
                    exc,
                )
            else:
                self._backoff = min(BACKOFF_CAP_SECONDS, self._backoff * 2)
            self._next_try = self._clock() + self._backoff

    def _recovered(self) -> None:
        with self._lock:
            if self._up:
                return
            self._up = True
            self._backoff = BACKOFF_FIRST_SECONDS
        logger.warning("Redis answers again: rate limits and cache are shared by the fleet again")


def open_link(settings: Settings) -> RedisLink | None:
    """The link to REDIS_URL (connected on first use), or None when it is not set."""
    if not settings.redis_url:
        return None
    timeout = settings.redis_timeout_ms / 1000
    # config.py accepts REDIS_CA_CERT beside a rediss:// URL only.
    tls = {"ssl_ca_data": settings.redis_ca_cert} if settings.redis_ca_cert else {}
    client = redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),  # our backoff is the link's, across requests
        **tls,
    )
    return RedisLink(client)
