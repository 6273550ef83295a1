"""Hostile clients: what a visitor can do to the server stack with addresses, bodies and tokens.

- IPv6 visitors are limited per network (IPV6_PREFIX_LENGTH, /64 by default), not per address;
  IPv4-mapped addresses count as the IPv4 address.
- Bodies, over real processes (functions-framework + gunicorn): a body larger than
  MAX_BODY_BYTES is refused before anything buffers it, on every route of both functions (the
  framework's own ``after_request`` hook used to read all of it into memory); malformed chunked
  framing is a JSON 400; a body that never fully arrives is cut off after
  BODY_DEADLINE_SECONDS while the worker keeps serving others.
- The admin function shows nothing without its token: every path and method answers 401,
  failed attempts share one per-IP limit checked before the token is compared, no CORS.
- The public /health says whether and what it serves, never where from or why not.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from chatbot.bucket.publishing import publish
from chatbot.bucket.storage import LocalStorage
from chatbot.config import ENVIRONMENT_VARIABLES, Settings
from chatbot.errors import ConfigError
from chatbot.web.bodies import BODY_DEADLINE_SECONDS
from chatbot.web.ratelimit import RateLimiter
from harness.processes import ADMIN_SOURCE, CHAT_SOURCE, FunctionProcess
from tests.publishing import corrupt_archive, point_latest, publish_copy

TOKEN = "hostile-clients-admin-token-4d1f8a2c6e9b"
MB = 1024 * 1024
# Every configuration variable blanked (the module's processes start before the per-test
# clean environment), then what the processes here need.
CLEAN = {name: "" for name in ENVIRONMENT_VARIABLES}
UNLIMITED = "100000/minute"


# -- real processes ------------------------------------------------------------------------------


def published_env(root: Path, built_snapshot) -> dict[str, str]:
    """A clean environment for a function serving ``built_snapshot``, published under ``root``."""
    storage = LocalStorage(root / "bucket")
    publish(storage, built_snapshot)
    return {**CLEAN, "SNAPSHOT_URI": storage.uri, "SNAPSHOT_DIR": str(root / "snap")}


@pytest.fixture(scope="module")
def servers(tmp_path_factory, built_snapshot):
    """The chat and admin functions, one worker with ONE thread each: a request that hangs
    the thread would hang the whole function, which is what the short-body test looks for."""
    root = tmp_path_factory.mktemp("hostile-clients")
    env = {
        **published_env(root, built_snapshot),
        "WORKERS": "1",
        "THREADS": "1",
        **{f"RATE_LIMIT_{n}": UNLIMITED for n in ("CHAT", "INFO", "STATS", "FEEDBACK")},
        "RATE_LIMIT_ADMIN": UNLIMITED,
        "RATE_LIMIT_ADMIN_WRITE": UNLIMITED,
        "ADMIN_TOKEN": TOKEN,
    }
    procs = {
        "chat": FunctionProcess("chat", CHAT_SOURCE, env, root / "chat.log"),
        "admin": FunctionProcess("admin", ADMIN_SOURCE, env, root / "admin.log"),
    }
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda p: p.start().wait_up(), procs.values()))
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()
    for proc in procs.values():
        assert "Traceback" not in proc.log(), proc.log()[-3000:]


# Routes of both functions, real and not: the body is dealt with before routing and auth.
ROUTES = [
    ("chat", "POST", "/chat"),
    ("chat", "GET", "/health"),
    ("chat", "POST", "/feedback"),
    ("chat", "DELETE", "/nope"),
    ("admin", "POST", "/snapshots/activate"),
    ("admin", "GET", "/nope"),
]
ROUTE_IDS = [f"{f}-{m}-{p.strip('/') or 'root'}" for f, m, p in ROUTES]


def head(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    return ("\r\n".join([*lines, *headers]) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], dict]:
    """One HTTP response from ``sock``: status, headers, JSON body."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    raw = response.read()
    return response.status, dict(response.getheaders()), json.loads(raw)


def peak_rss_mb(proc: FunctionProcess) -> float:
    """The highest resident set size any worker of ``proc`` has had (VmHWM), in MB."""
    peaks = []
    for pid in proc.pids()[1:]:  # the arbiter first, then its workers
        status = Path(f"/proc/{pid}/status").read_text()
        peaks.append(int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024)
    return max(peaks)


def push(sock: socket.socket, limit: int) -> int:
    """Send up to ``limit`` more bytes of body; how many went before the server stopped us."""
    chunk, sent = b"a" * MB, 0
    try:
        while sent < limit:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:  # reset, broken pipe, or a full window the server no longer reads
        pass
    return sent


@pytest.mark.parametrize("function, method, path", ROUTES, ids=ROUTE_IDS)
def test_a_200_mb_body_is_refused_unread_on_every_route(servers, function, method, path):
    proc = servers[function]
    before = peak_rss_mb(proc)
    declared = 200 * MB
    with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as sock:
        sock.sendall(head(method, path, f"Content-Length: {declared}") + b"a" * MB)
        # The answer comes while 199 MB are still unsent: nobody waits for the body.
        status, headers, body = read_response(sock)
        assert status == 413, body
        assert body == {"error": "Request body is larger than 65536 bytes", "status": "error"}
        assert headers["X-Request-Id"]
        # And nobody reads it afterwards either: the server stops taking bytes.
        assert push(sock, declared) < 64 * MB
    assert peak_rss_mb(proc) - before < 32, "the worker buffered the body"


@pytest.mark.parametrize("function, method, path", ROUTES[:1] + ROUTES[-1:], ids=["chat", "admin"])
def test_a_chunked_body_is_cut_off_past_max_body_bytes(servers, function, method, path):
    proc = servers[function]
    chunk = b"a" * 16384
    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as sock:
        # 128 KiB of a body that never ends: past MAX_BODY_BYTES (64 KiB) the server answers.
        sock.sendall(head(method, path, "Transfer-Encoding: chunked") + framed * 8)
        status, headers, body = read_response(sock)
        assert status == 413 and "larger than 65536 bytes" in body["error"]
        assert headers["X-Request-Id"]
        sent = 0
        try:
            while sent < 64 * MB:
                sock.sendall(framed * 64)
                sent += 64 * len(chunk)
        except OSError:
            pass
        assert sent < 64 * MB, "the server kept reading a refused body"


BAD_FRAMING = {
    "size-not-hex": b"zz\r\nhello\r\n0\r\n\r\n",
    "no-crlf-after-data": b"5\r\nhelloXX0\r\n\r\n",
    "second-size-not-hex": b"5\r\nhello\r\nqq\r\nx\r\n0\r\n\r\n",
    "empty-size": b"\r\nhello\r\n0\r\n\r\n",
    "negative-size": b"-5\r\nhello\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("framing", BAD_FRAMING.values(), ids=BAD_FRAMING.keys())
@pytest.mark.parametrize("function, method, path", ROUTES, ids=ROUTE_IDS)
def test_malformed_chunked_framing_is_a_json_400(servers, function, method, path, framing):
    proc = servers[function]
    with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as sock:
        sock.sendall(
            head(method, path, "Transfer-Encoding: chunked", "X-Request-Id: bad-1") + framing
        )
        status, headers, body = read_response(sock)
    assert status == 400, body
    assert body["status"] == "error" and "malformed chunked encoding" in body["error"]
    assert headers["X-Request-Id"] == "bad-1"
    assert headers["Content-Type"] == "application/json"


def _served_meanwhile(proc: FunctionProcess, results: list) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", proc.port), timeout=BODY_DEADLINE_SECONDS + 5) as s:
        s.sendall(b"GET /nope-but-answered HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, _ = read_response(s)
    results.append((status, time.monotonic() - started))


STALLS = {
    # Content-Length 1000, 10 bytes sent, then nothing: the reviewer's hang.
    "short": (b"0123456789", 0.0),
    # A byte at a time, each well within any per-read timeout: only a deadline ends it.
    "trickle": (b"{", 0.5),
}


@pytest.mark.parametrize(
    "function, method, path, stall",
    [
        ("chat", "POST", "/chat", "short"),
        ("admin", "POST", "/snapshots/activate", "short"),
        ("chat", "GET", "/health", "trickle"),
    ],
)
def test_a_body_that_never_arrives_is_cut_off_and_others_are_served(
    servers, function, method, path, stall
):
    proc = servers[function]
    first, every = STALLS[stall]
    limit = BODY_DEADLINE_SECONDS + 3
    with socket.create_connection(("127.0.0.1", proc.port), timeout=limit) as sock:
        sock.sendall(head(method, path, "Content-Length: 1000") + first)
        started = time.monotonic()
        others: list = []
        other = threading.Thread(target=_served_meanwhile, args=(proc, others))
        other.start()
        stop = threading.Event()

        def trickle() -> None:
            while every and not stop.wait(every):
                try:
                    sock.sendall(b" ")
                except OSError:
                    return

        feeder = threading.Thread(target=trickle)
        feeder.start()
        try:
            status, headers, body = read_response(sock)
        except (ConnectionError, http.client.RemoteDisconnected):
            status, headers, body = None, {}, {}  # dropped: also an acceptable end
        finally:
            stop.set()
            feeder.join()
        took = time.monotonic() - started
        other.join(timeout=limit)
    assert took < limit, f"the stalled request held the worker for {took:.1f}s"
    if status is not None:
        assert status == 408 and body["status"] == "error", body
        assert headers["X-Request-Id"]
    # The one worker thread was free again in time for the other visitor.
    assert others and others[0][0] in (401, 404) and others[0][1] < limit, others


# -- IPv6 ------------------------------------------------------------------------------------------


def _stats(client, forwarded_for: str):
    return client.get("/cache/stats", headers={"X-Forwarded-For": forwarded_for}).status_code


def test_ipv6_addresses_in_one_64_share_a_limit(chat_client):
    client = chat_client(RATE_LIMIT_STATS="3/minute", TRUSTED_PROXY_HOPS=1)
    same_64 = ["2001:db8:a:b::1", "2001:db8:a:b::2", "2001:db8:a:b:ffff:ffff:ffff:ffff"]
    assert [_stats(client, ip) for ip in same_64] == [200, 200, 200]
    assert _stats(client, "2001:db8:a:b:1234::9") == 429  # a fourth address, same network
    assert _stats(client, "2001:db8:a:c::1") == 200  # the next /64 is someone else


def test_3000_addresses_of_one_64_get_one_limit():
    limiter = RateLimiter()  # IPV6_PREFIX_LENGTH's default, 64
    allowed = sum(
        limiter.hit("/chat", "20/minute", f"2001:db8:0:7:{i >> 16:x}:{i & 0xFFFF:x}::1").allowed
        for i in range(3000)
    )
    assert allowed == 20


def test_the_prefix_length_is_configurable(chat_client):
    per_address = chat_client(RATE_LIMIT_STATS="1/minute", IPV6_PREFIX_LENGTH=128)
    for ip in ("2001:db8::1", "2001:db8::2"):
        assert per_address.get("/cache/stats", environ_base={"REMOTE_ADDR": ip}).status_code == 200
    per_48 = chat_client(RATE_LIMIT_STATS="1/minute", IPV6_PREFIX_LENGTH=48)
    assert (
        per_48.get("/cache/stats", environ_base={"REMOTE_ADDR": "2001:db8:0:1::1"}).status_code
        == 200
    )
    assert (
        per_48.get("/cache/stats", environ_base={"REMOTE_ADDR": "2001:db8:0:2::1"}).status_code
        == 429
    )


def test_ipv4_stays_per_address_and_mapped_addresses_count_as_ipv4(chat_client):
    client = chat_client(RATE_LIMIT_STATS="2/minute", TRUSTED_PROXY_HOPS=1)
    assert _stats(client, "203.0.113.7") == 200
    assert _stats(client, "::ffff:203.0.113.7") == 200  # the same visitor, written in IPv6
    assert _stats(client, "::ffff:cb00:7107") == 429  # and again, in hex
    assert _stats(client, "203.0.113.8") == 200  # the neighbour has its own limit


@pytest.mark.parametrize("value", ["0", "129", "64.5", "-1"])
def test_a_bad_ipv6_prefix_length_stops_start_up(value):
    with pytest.raises(ConfigError, match="IPV6_PREFIX_LENGTH"):
        Settings.from_env({"IPV6_PREFIX_LENGTH": value})
    assert Settings.from_env({}).ipv6_prefix_length == 64


def test_ipv6_clients_are_still_anonymised_in_the_logs(chat_client, capsys):
    client = chat_client(TRUSTED_PROXY_HOPS=1)
    assert _stats(client, "2001:db8:beef:cafe::42") == 200
    logged = "".join(capsys.readouterr())
    assert "/cache/stats" in logged  # the summary line is where we look
    assert "2001:db8" not in logged.lower() and "beef" not in logged.lower()


# -- the admin function ----------------------------------------------------------------------------

ANY_REQUEST = [
    ("GET", "/nope"),
    ("PUT", "/cache"),
    ("GET", "/cache"),
    ("OPTIONS", "/cache"),
    ("OPTIONS", "/nope"),
    ("DELETE", "/"),
    ("HEAD", "/snapshots"),
    ("PATCH", "/snapshots/activate"),
    ("GET", "/openapi.json"),
]
UNAUTHORIZED = {"error": "Missing or invalid X-Admin-Token", "status": "error"}


def test_without_the_token_every_path_and_method_is_401(admin_app):
    client = admin_app(ADMIN_TOKEN=TOKEN).test_client()
    for i, (method, path) in enumerate(ANY_REQUEST):
        for token in (None, "wrong"):
            headers = {"X-Admin-Token": token} if token else {}
            ip = {"REMOTE_ADDR": f"192.0.2.{i + 1}"}
            resp = client.open(path, method=method, headers=headers, environ_base=ip)
            assert resp.status_code == 401, (method, path, token, resp.status_code)
            assert "Allow" not in resp.headers, (method, path)
            if method != "HEAD":
                assert resp.get_json() == UNAUTHORIZED
    # With the token the same requests are told what is there.
    auth = {"X-Admin-Token": TOKEN}
    assert client.get("/nope", headers=auth).status_code == 404
    wrong = client.put("/cache", headers=auth)
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "DELETE, OPTIONS"
    preflight = client.options("/cache", headers=auth)
    assert preflight.status_code == 204 and preflight.headers["Allow"] == "DELETE, OPTIONS"


def test_the_admin_function_sends_no_cors_headers(admin_app):
    client = admin_app(ADMIN_TOKEN=TOKEN, ALLOWED_ORIGINS="*").test_client()
    origin = {"Origin": "https://evil.example", "Access-Control-Request-Method": "DELETE"}
    responses = [
        client.options("/cache", headers=origin),
        client.options("/cache", headers={**origin, "X-Admin-Token": TOKEN}),
        client.get("/snapshots", headers={**origin, "X-Admin-Token": TOKEN}),
        client.get("/snapshots", headers=origin),
    ]
    assert [r.status_code for r in responses] == [401, 204, 200, 401]
    for resp in responses:
        cors = [name for name in resp.headers.keys() if name.lower().startswith("access-control")]
        assert not cors, cors


def test_failed_attempts_share_one_limit_checked_before_the_token(admin_app):
    client = admin_app(ADMIN_TOKEN=TOKEN, RATE_LIMIT_ADMIN="4/minute").test_client()
    ip = {"REMOTE_ADDR": "198.51.100.20"}
    guesses = [("DELETE", "/cache"), ("GET", "/nope"), ("OPTIONS", "/"), ("POST", "/snapshots")]
    statuses = [
        client.open(p, method=m, headers={"X-Admin-Token": f"guess-{i}"}, environ_base=ip)
        for i, (m, p) in enumerate(guesses)
    ]
    assert [r.status_code for r in statuses] == [401] * 4
    # Spread over four routes, they used up one limit; now even the right token is not
    # compared: the answer is the same whatever is sent.
    for token in ("guess-5", TOKEN):
        limited = client.get("/snapshots", headers={"X-Admin-Token": token}, environ_base=ip)
        assert limited.status_code == 429
        assert limited.get_json() == {"error": "Rate limit exceeded: 4 per 1 minute"}
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # Another address is unaffected, and its valid requests are not counted as failures.
    other = {"REMOTE_ADDR": "198.51.100.21"}
    for _ in range(4):  # GET /snapshots's own limit (RATE_LIMIT_ADMIN) is 4 here too
        ok = client.get("/snapshots", headers={"X-Admin-Token": TOKEN}, environ_base=other)
        assert ok.status_code == 200
    wrong = client.get("/cache/stats", headers={"X-Admin-Token": "guess"}, environ_base=other)
    assert wrong.status_code == 401


def test_concurrent_guesses_get_exactly_the_limit(admin_app):
    client = admin_app(ADMIN_TOKEN=TOKEN, RATE_LIMIT_ADMIN="5/minute").test_client()

    def guess(i):
        headers = {"X-Admin-Token": f"guess-{i}"}
        return client.get(["/snapshots", "/cache/stats", "/x"][i % 3], headers=headers).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = sorted(pool.map(guess, range(20)))
    assert statuses == [401] * 5 + [429] * 15


@pytest.mark.parametrize("token", ["x", "too-short-token", "a" * 31])
def test_a_short_admin_token_stops_start_up(token):
    with pytest.raises(ConfigError, match="ADMIN_TOKEN must be at least 32 characters") as err:
        Settings.from_env({"ADMIN_TOKEN": token})
    assert token not in str(err.value)
    assert Settings.from_env({"ADMIN_TOKEN": "a" * 32}).admin_token == "a" * 32
    assert Settings.from_env({}).admin_token is None  # unset: allowed, refuses every request


def test_the_admin_process_does_not_start_with_a_short_token(tmp_path):
    env = {**CLEAN, "ADMIN_TOKEN": "short-token-1234", "SNAPSHOT_URI": str(tmp_path)}
    proc = FunctionProcess("admin", ADMIN_SOURCE, env, tmp_path / "admin.log")
    with pytest.raises(RuntimeError, match="exited early"):
        proc.start()
    log = proc.log()
    assert "ADMIN_TOKEN must be at least 32 characters" in log
    assert "short-token-1234" not in log


# -- /health ---------------------------------------------------------------------------------------

HEALTH_FIELDS = {"status", "message", "api_version", "cache_size", "snapshot", "generator"}


def test_health_says_what_is_served_and_nothing_about_where(chat_client, bucket, built_snapshot):
    client = chat_client()
    resp = client.get("/health")
    assert resp.status_code == 200
    body = resp.get_json()
    assert set(body) == HEALTH_FIELDS | {"uptime_seconds"}
    assert body["snapshot"] == {
        "version": built_snapshot.manifest.version,
        "documents": built_snapshot.manifest.summary()["documents"],
        "chunks": built_snapshot.manifest.chunks,
    }
    assert bucket.uri not in resp.get_data(as_text=True)


def test_health_does_not_show_refused_versions_or_why(
    chat_client, bucket, built_snapshot, tmp_path
):
    client = chat_client()
    assert client.get("/health").status_code == 200
    served = built_snapshot.manifest.version
    bad = publish_copy(bucket, built_snapshot, served + "-bad", tmp_path / "bad", latest=False)
    corrupt_archive(bucket, bad)
    point_latest(bucket, bad)
    service = client.application.function.service
    service.follower.poll()
    assert bad in service.snapshots.refused  # refused, and the reason is known inside
    resp = client.get("/health")
    assert resp.status_code == 200
    text = resp.get_data(as_text=True)
    assert "refused" not in text and bad not in text and "integrity" not in text
    assert resp.get_json()["snapshot"]["version"] == served


def test_health_not_ready_gives_no_reason(chat_client, bucket, built_snapshot, tmp_path):
    corrupt_archive(bucket, built_snapshot.manifest.version)
    refused = chat_client().get("/health")
    nowhere = tmp_path / "no-bucket-here"
    missing = chat_client(SNAPSHOT_URI=nowhere).get("/health")
    for resp, secret in ((refused, "integrity"), (missing, str(nowhere))):
        assert resp.status_code == 503 and resp.headers["Retry-After"]
        body = resp.get_json()
        assert set(body) == HEALTH_FIELDS
        assert body["message"] == "Service not ready: no snapshot can be served yet"
        assert body["snapshot"] == {"version": None}
        text = resp.get_data(as_text=True)
        assert secret not in text and bucket.uri not in text and "LATEST" not in text


# -- X-Forwarded-For over a real server ---------------------------------------------------------


def _get_index(port: int, forwarded: list[str]) -> int:
    """GET / with one X-Forwarded-For header line per entry of ``forwarded``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", "/")
        for line in forwarded:
            conn.putheader("X-Forwarded-For", line)
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_x_forwarded_for_sent_as_several_lines_buys_no_quota(tmp_path, built_snapshot):
    """gunicorn joins repeated header lines in order, so the entry our proxy appended stays
    the right-most one: a client that forges a new first line each time shares its limit."""
    env = {
        **published_env(tmp_path, built_snapshot),
        "TRUSTED_PROXY_HOPS": "1",
        "RATE_LIMIT_INFO": "3/minute",
    }
    with FunctionProcess("chat", CHAT_SOURCE, env, tmp_path / "chat.log") as chat:
        chat.wait_up()
        forged = [_get_index(chat.port, [f"6.6.6.{i}", "203.0.113.5"]) for i in range(4)]
        assert forged == [200, 200, 200, 429]
        # The same client behind a proxy that writes ip:port is still the same client.
        assert _get_index(chat.port, ["203.0.113.5:41234"]) == 429
        assert _get_index(chat.port, ["6.6.6.6, , 203.0.113.5"]) == 429
        # Another client is counted on its own.
        assert _get_index(chat.port, ["6.6.6.6", "198.51.100.7"]) == 200
