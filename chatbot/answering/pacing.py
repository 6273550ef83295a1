"""Pacing of bulk requests under a quota: wait before a request rather than meet a 429.

The indexer embeds a whole knowledge base through Gemini, whose quotas count requests and
input tokens per minute; sending as fast as the model answers ends in 429 RESOURCE_EXHAUSTED
after a few hundred chunks. ``Pacer`` keeps both under ``EMBEDDING_REQUEST_RATE`` and
``EMBEDDING_TOKEN_RATE`` with the ``limits`` library's moving windows (the same rate
strings and library as the HTTP rate limits), and the retry policy still honours the
server's retryDelay when a quota shared with others runs out anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

__all__ = ["Pacer"]
MIN_PAUSE_SECONDS = 0.01


class Pacer:
    """Waits until one more request of ``tokens`` fits every window; one caller at a time."""

    def __init__(
        self,
        request_rate: str,
        token_rate: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._requests = parse_many(request_rate)
        self._tokens = parse_many(token_rate)
        self._sleep = sleep
        self.waited_seconds = 0.0

    def _costs(self, tokens: int) -> list[tuple[RateLimitItem, int]]:
        # A request larger than a whole window's token budget waits for an empty window.
        return [(item, 1) for item in self._requests] + [
            (item, max(1, min(tokens, item.amount))) for item in self._tokens
        ]

    def wait(self, tokens: int) -> None:
        """Block until a request of ``tokens`` input tokens fits, then count it."""
        costs = self._costs(tokens)
        while blocked := [item for item, cost in costs if not self._limiter.test(item, cost=cost)]:
            reset = max(self._limiter.get_window_stats(item).reset_time for item in blocked)
            pause = max(MIN_PAUSE_SECONDS, reset - time.time())
            self.waited_seconds += pause
            self._sleep(pause)
        for item, cost in costs:
            self._limiter.hit(item, cost=cost)
