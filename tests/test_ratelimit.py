"""Per-IP moving-window limits: exact under concurrency, keyed on the trusted client IP."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from chatbot.web.ratelimit import SWEEP_EVERY, RateLimiter, client_ip, limit_key


@pytest.mark.parametrize(
    "remote, xff, hops, expected",
    [
        ("10.0.0.1", None, 0, "10.0.0.1"),
        ("10.0.0.1", "1.2.3.4", 0, "10.0.0.1"),  # locally nobody is trusted
        ("10.0.0.1", "6.6.6.6, 1.2.3.4", 1, "1.2.3.4"),  # the right-most entry is Google's
        ("10.0.0.1", "6.6.6.6, 1.2.3.4, 5.6.7.8", 2, "1.2.3.4"),
        ("10.0.0.1", "1.2.3.4", 2, "10.0.0.1"),  # shorter than the trusted chain
        ("10.0.0.1", "garbage, not-an-ip", 1, "10.0.0.1"),
        ("10.0.0.1", "", 1, "10.0.0.1"),
        ("10.0.0.1", "2001:db8::1", 1, "2001:db8::1"),
        ("10.0.0.1", "6.6.6.6, 1.2.3.4:4711", 1, "1.2.3.4"),  # a proxy that writes the port
        ("10.0.0.1", "[2001:db8::1]:443", 1, "2001:db8::1"),
        ("10.0.0.1", "[2001:db8::1]", 1, "2001:db8::1"),
        ("10.0.0.1", "1.2.3.4:port", 1, "10.0.0.1"),
        ("10.0.0.1", "6.6.6.6, , 1.2.3.4, 5.6.7.8", 2, "1.2.3.4"),  # empty entries skipped
        ("10.0.0.1", "1.2.3.4, ", 1, "1.2.3.4"),
        ("10.0.0.1", " , ", 1, "10.0.0.1"),
        (None, None, 0, "unknown"),  # no peer address: one shared "unknown" client
        (None, "garbage", 1, "unknown"),
        (None, "1.2.3.4", 1, "1.2.3.4"),
    ],
)
def test_client_ip(remote, xff, hops, expected):
    assert client_ip(remote, xff, hops) == expected


@pytest.mark.parametrize(
    "ip, prefix, key",
    [
        ("203.0.113.7", 64, "203.0.113.7"),  # IPv4: the address
        ("2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:3:4:5:6", 48, "2001:db8:1::/48"),
        ("2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6/128"),
        ("::ffff:203.0.113.7", 64, "203.0.113.7"),  # IPv4-mapped: the IPv4 address
        ("fe80::1%eth0", 64, "fe80::/64"),
        ("unknown", 64, "unknown"),
    ],
)
def test_limit_key(ip, prefix, key):
    assert limit_key(ip, prefix) == key


def test_many_distinct_ips_do_not_grow_memory_without_bound():
    limiter = RateLimiter()
    for i in range(3000):
        limiter.hit("/x", "5/1second", f"10.0.{i // 256}.{i % 256}")
    time.sleep(1.1)
    for _ in range(1000):  # the next sweep runs after these hits and drops idle keys
        limiter.hit("/x", "5/1second", "10.9.9.9")
    assert limiter.tracked_keys() < 100


def test_25_concurrent_chats_from_one_ip_exactly_20_pass(chat_client, fake_gemini):
    client = chat_client(
        GOOGLE_API_KEY="test-key", GEMINI_BASE_URL=fake_gemini.url, TRUSTED_PROXY_HOPS=1
    )

    def one(i):
        # The left-most X-Forwarded-For entry is client-controlled and must not matter.
        headers = {"X-Forwarded-For": f"198.51.100.{i}, 203.0.113.7"}
        return client.post(
            "/chat", json={"message": f"What services do you offer? #{i}"}, headers=headers
        )

    with ThreadPoolExecutor(max_workers=25) as pool:
        responses = list(pool.map(one, range(25)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 20 + [429] * 5
    assert fake_gemini.generate_calls <= 20
    for r in responses:
        assert r.headers["X-RateLimit-Limit"] == "20"
        if r.status_code == 429:
            assert r.get_json() == {"error": "Rate limit exceeded: 20 per 1 minute"}
            assert 1 <= int(r.headers["Retry-After"]) <= 60
            assert r.headers["X-RateLimit-Remaining"] == "0"
    # Another visitor is not affected.
    other = client.post(
        "/chat",
        json={"message": "Where are your offices?"},
        headers={"X-Forwarded-For": "203.0.113.8"},
    )
    assert other.status_code == 200


def test_requests_pass_again_after_the_window(chat_client):
    # limits' memory storage reads time.time() itself (no clock seam), so a real 1-second
    # window stands in for a fake clock here.
    client = chat_client(RATE_LIMIT_STATS="2/second")
    assert [client.get("/cache/stats").status_code for _ in range(3)] == [200, 200, 429]
    time.sleep(1.1)
    assert client.get("/cache/stats").status_code == 200


def test_health_is_never_limited(chat_client):
    client = chat_client(RATE_LIMIT_INFO="1/minute")
    assert all(client.get("/health").status_code == 200 for _ in range(30))
    assert [client.get("/").status_code for _ in range(2)] == [200, 429]


def test_allowed_responses_carry_rate_limit_headers(chat_client):
    client = chat_client()
    resp = client.get("/cache/stats")
    assert resp.headers["X-RateLimit-Limit"] == "30"
    assert resp.headers["X-RateLimit-Remaining"] == "29"
    assert int(resp.headers["X-RateLimit-Reset"]) > time.time()
    assert client.application.function.router.limiter.tracked_keys() == 1


def test_a_decision_says_the_tightest_limit_and_its_headers():
    limiter = RateLimiter()
    first = limiter.hit("/x", "3/minute;10/hour", "192.0.2.1")
    assert first.allowed and first.limit_text == "3 per 1 minute" and first.limit == 3
    assert first.remaining == 2 and first.retry_after == 0
    assert first.headers() == {
        "X-RateLimit-Limit": "3",
        "X-RateLimit-Remaining": "2",
        "X-RateLimit-Reset": str(math.ceil(first.reset_at)),
    }
    assert time.time() < first.reset_at <= time.time() + 60


def test_peek_does_not_count_and_hit_does():
    limiter = RateLimiter()
    for _ in range(3):
        assert limiter.peek("/x", "2/minute", "192.0.2.1").remaining == 2
    assert limiter.hit("/x", "2/minute", "192.0.2.1").allowed
    assert limiter.hit("/x", "2/minute", "192.0.2.1").allowed
    refused = limiter.peek("/x", "2/minute", "192.0.2.1")
    assert not refused.allowed and refused.remaining == 0
    assert 1 <= refused.retry_after <= 60
    assert not limiter.hit("/x", "2/minute", "192.0.2.1").allowed


def test_a_refusal_by_any_of_several_limits_refuses():
    limiter = RateLimiter()
    assert limiter.hit("/x", "1/second;100/minute", "192.0.2.1").allowed
    second = limiter.hit("/x", "1/second;100/minute", "192.0.2.1")
    assert not second.allowed and second.limit_text == "1 per 1 second"
    assert second.retry_after == 1


def test_limits_count_per_route_and_per_client_network():
    limiter = RateLimiter(ipv6_prefix_length=48)
    assert limiter.hit("/a", "1/minute", "2001:db8:1:2::1").allowed
    assert not limiter.hit("/a", "1/minute", "2001:db8:1:3::1").allowed  # same /48
    assert not limiter.peek("/a", "1/minute", "2001:db8:1:ffff::9").allowed
    assert limiter.hit("/b", "1/minute", "2001:db8:1:2::1").allowed  # another route
    assert limiter.hit("/a", "1/minute", "2001:db8:2::1").allowed  # another /48


def test_idle_clients_are_forgotten_on_the_sweep_and_count_afresh():
    limiter = RateLimiter()
    assert limiter.hit("/x", "1/1second", "192.0.2.1").allowed
    assert limiter.tracked_keys() == 1
    time.sleep(1.05)
    for _ in range(SWEEP_EVERY - 1):
        limiter.hit("/y", "1000000/hour", "198.51.100.1")
    assert limiter.tracked_keys() == 1  # only the busy client is left
    assert limiter.hit("/x", "1/1second", "192.0.2.1").allowed
