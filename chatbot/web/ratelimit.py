"""Per-IP, per-route moving-window rate limits (the `limits` library) and client IP resolution."""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from dataclasses import dataclass

from limits import parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

__all__ = ["Decision", "RateLimiter", "client_ip"]
SWEEP_EVERY = 1000


def client_ip(remote_addr: str | None, forwarded_for: str | None, trusted_hops: int) -> str:
    """The visitor's IP: ``trusted_hops`` entries from the right of X-Forwarded-For.

    Proxies we trust append the address they saw, so only the right-most entries are
    trustworthy; anything to their left was written by the client. A header too short or
    malformed for the configured hops falls back to the socket peer.
    """
    peer = remote_addr or "unknown"
    if trusted_hops <= 0 or not forwarded_for:
        return peer
    entries = [e.strip() for e in forwarded_for.split(",")]
    if len(entries) < trusted_hops:
        return peer
    candidate = entries[-trusted_hops]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return peer


@dataclass(frozen=True)
class Decision:
    """The outcome of one rate-limit check, with the headers to send either way."""

    allowed: bool
    limit_text: str
    limit: int
    remaining: int
    reset_at: float
    retry_after: int

    def headers(self) -> dict[str, str]:
        """The X-RateLimit-* headers of this decision."""
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }


class RateLimiter:
    """Moving-window limits kept in this instance's memory."""

    def __init__(self) -> None:
        self._storage = MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._seen: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()
        self._hits = 0

    def hit(self, route: str, rate: str, ip: str) -> Decision:
        """Count one request of ``ip`` on ``route`` against ``rate`` (e.g. '20/minute')."""
        items = parse_many(rate)
        allowed = True
        tightest = None
        for item in items:
            if not self._limiter.hit(item, route, ip):
                allowed = False
            stats = self._limiter.get_window_stats(item, route, ip)
            if tightest is None or stats.remaining < tightest[1].remaining:
                tightest = (item, stats)
        assert tightest is not None
        item, stats = tightest
        now = time.time()
        self._remember(route, rate, ip, now + item.get_expiry())
        return Decision(
            allowed=allowed,
            limit_text=str(item),
            limit=item.amount,
            remaining=max(0, stats.remaining),
            reset_at=stats.reset_time,
            retry_after=max(1, math.ceil(stats.reset_time - now)) if not allowed else 0,
        )

    def _remember(self, route: str, rate: str, ip: str, idle_at: float) -> None:
        # limits' memory storage keeps an (empty) entry for every key it has seen; clearing
        # the keys whose window has passed keeps memory bounded under many distinct IPs.
        with self._lock:
            self._seen[(route, rate, ip)] = idle_at
            self._hits += 1
            if self._hits % SWEEP_EVERY:
                return
            now = time.time()
            idle = [key for key, at in self._seen.items() if at < now]
            for key in idle:
                del self._seen[key]
        for route_, rate_, ip_ in idle:
            for item in parse_many(rate_):
                self._limiter.clear(item, route_, ip_)

    def tracked_keys(self) -> int:
        """How many (route, IP) pairs are remembered: bounded by the recent traffic."""
        with self._lock:
            return len(self._seen)
