"""Per-IP, per-route moving-window rate limits (the `limits` library) and client IP resolution.

A client is an IPv4 address, or an IPv6 network: one visitor usually holds a whole /64 (and
can pick any address in it), so an IPv6 address counts as its /IPV6_PREFIX_LENGTH network.
An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``) counts as the IPv4 address it maps.

With REDIS_URL the windows live in Redis (`limits`' Redis storage, on the instance's
``RedisLink``), so the limit holds for the whole fleet: 20 a minute from all instances, not
20 from each. While Redis is unreachable the instance counts in its own memory instead.
"""

from __future__ import annotations

import ipaddress
import math
import re
import threading
import time
from dataclasses import dataclass

from limits import parse_many
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import MovingWindowRateLimiter

from chatbot.shared_state.link import RedisLink, SharedStateDown

__all__ = ["Decision", "RateLimiter", "client_ip", "limit_key"]
SWEEP_EVERY = 1000


def client_ip(remote_addr: str | None, forwarded_for: str | None, trusted_hops: int) -> str:
    """The visitor's IP: ``trusted_hops`` entries from the right of X-Forwarded-For.

    Proxies we trust append the address they saw, so only the right-most entries are
    trustworthy; anything to their left was written by the client (empty entries there are
    skipped). An entry may carry a port (``203.0.113.7:4711``, ``[2001:db8::1]:443``). A
    header too short or malformed for the configured hops falls back to the socket peer;
    with no peer either, the client is ``unknown`` (one shared limit).
    """
    peer = remote_addr or "unknown"
    if trusted_hops <= 0 or not forwarded_for:
        return peer
    entries = [e.strip() for e in forwarded_for.split(",") if e.strip()]
    if len(entries) < trusted_hops:
        return peer
    address = _address(entries[-trusted_hops])
    return peer if address is None else address


_WITH_PORT = re.compile(r"^\[(?P<v6>[^\]]+)\](?::\d{1,5})?$|^(?P<v4>[\d.]+):\d{1,5}$")


def _address(entry: str) -> str | None:
    """The IP in an X-Forwarded-For entry, without a port; None if it holds none."""
    if match := _WITH_PORT.match(entry):  # [IPv6], [IPv6]:port or IPv4:port
        entry = match["v6"] or match["v4"]
    try:
        return str(ipaddress.ip_address(entry))
    except ValueError:
        return None


def limit_key(ip: str, ipv6_prefix_length: int = 64) -> str:
    """Whom a limit counts: an IPv4 address, or the /``ipv6_prefix_length`` of an IPv6 one.

    ``2001:db8::1`` -> ``2001:db8::/64``; ``::ffff:192.0.2.1`` -> ``192.0.2.1``. Anything that
    is not an address (``unknown``) is its own key.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        # A zone id (fe80::1%eth0) names the interface, not the network: it is dropped.
        return str(ipaddress.IPv6Network((address, ipv6_prefix_length), strict=False))
    return str(address)


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
    """Moving-window limits per route and client (limit_key): in Redis when ``shared`` is
    given and answering, else in this instance's memory."""

    def __init__(self, ipv6_prefix_length: int = 64, shared: RedisLink | None = None) -> None:
        self.ipv6_prefix_length = ipv6_prefix_length
        self._storage = MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._shared = shared
        self._shared_limiter = (
            MovingWindowRateLimiter(
                RedisStorage("redis://", connection_pool=shared.client.connection_pool)
            )
            if shared is not None
            else None
        )
        self._seen: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()
        self._hits = 0

    def hit(self, route: str, rate: str, ip: str) -> Decision:
        """Count one request of ``ip`` on ``route`` against ``rate`` (e.g. '20/minute')."""
        return self._decide(route, rate, limit_key(ip, self.ipv6_prefix_length), count=True)

    def peek(self, route: str, rate: str, ip: str) -> Decision:
        """Whether one more request of ``ip`` on ``route`` would pass, without counting it."""
        return self._decide(route, rate, limit_key(ip, self.ipv6_prefix_length), count=False)

    def _decide(self, route: str, rate: str, key: str, *, count: bool) -> Decision:
        shared = self._shared_limiter
        if shared is not None and self._shared is not None:
            try:
                return self._shared.call(
                    lambda _: self._evaluate(shared, route, rate, key, count=count)
                )
            except SharedStateDown:
                pass  # counted in memory below; the link logs the outage once
        decision = self._evaluate(self._limiter, route, rate, key, count=count)
        if count:
            longest = max(item.get_expiry() for item in parse_many(rate))
            self._remember(route, rate, key, time.time() + longest)
        return decision

    @staticmethod
    def _evaluate(
        limiter: MovingWindowRateLimiter, route: str, rate: str, key: str, *, count: bool
    ) -> Decision:
        items = parse_many(rate)
        allowed = True
        tightest = None
        for item in items:
            passed = limiter.hit(item, route, key) if count else limiter.test(item, route, key)
            if not passed:
                allowed = False
            stats = limiter.get_window_stats(item, route, key)
            if tightest is None or stats.remaining < tightest[1].remaining:
                tightest = (item, stats)
        assert tightest is not None
        item, stats = tightest
        now = time.time()
        return Decision(
            allowed=allowed,
            limit_text=str(item),
            limit=item.amount,
            remaining=max(0, stats.remaining),
            reset_at=stats.reset_time,
            retry_after=max(1, math.ceil(stats.reset_time - now)) if not allowed else 0,
        )

    def _remember(self, route: str, rate: str, key: str, idle_at: float) -> None:
        # limits' memory storage keeps an (empty) entry for every key it has seen; clearing
        # the keys whose window has passed keeps memory bounded under many distinct IPs.
        with self._lock:
            self._seen[(route, rate, key)] = idle_at
            self._hits += 1
            if self._hits % SWEEP_EVERY:
                return
            now = time.time()
            idle = [seen for seen, at in self._seen.items() if at < now]
            for seen in idle:
                del self._seen[seen]
        for route_, rate_, key_ in idle:
            for item in parse_many(rate_):
                self._limiter.clear(item, route_, key_)

    def tracked_keys(self) -> int:
        """How many (route, client) pairs are remembered: bounded by the recent traffic."""
        with self._lock:
            return len(self._seen)
