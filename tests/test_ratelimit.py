"""Per-IP moving-window limits: exact under concurrency, keyed on the trusted client IP."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from chatbot.web.ratelimit import RateLimiter, client_ip, limit_key


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
