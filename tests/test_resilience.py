"""Gemini behind the chat function: retries, friendly failures, caching and grounding."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chatbot.answering.service import ChatService
from chatbot.bucket.publishing import BuiltSnapshot, publish
from chatbot.config import Settings
from chatbot.errors import FRIENDLY_GENERATION_ERROR
from harness.processes import ROOT, child_env, free_port, request

QUESTION = "What services do you offer?"


def gemini_client(chat_client, fake, **env):
    return chat_client(
        GOOGLE_API_KEY="test-key-123456",
        GEMINI_BASE_URL=fake.url,
        RETRY_DELAY="0.01",
        **env,
    )


def test_transient_failures_are_retried_and_the_visitor_gets_the_answer(chat_client, fake_gemini):
    client = gemini_client(chat_client, fake_gemini)
    fake_gemini.script([503, 503, 200])
    resp = client.post("/chat", json={"message": QUESTION})
    assert resp.status_code == 200
    assert fake_gemini.generate_calls == 3
    body = resp.get_json()
    assert body["status"] == "success" and body["sources"]


def test_a_rejected_request_is_not_retried(chat_client, fake_gemini):
    client = gemini_client(chat_client, fake_gemini)
    fake_gemini.script([400])
    resp = client.post("/chat", json={"message": QUESTION})
    assert fake_gemini.generate_calls == 1
    assert resp.status_code == 502
    assert resp.get_json() == {"response": FRIENDLY_GENERATION_ERROR, "status": "error"}


def test_gemini_down_gives_the_friendly_503_in_bounded_time(chat_client, fake_gemini, caplog):
    client = gemini_client(
        chat_client, fake_gemini, MAX_RETRIES="3", GENERATION_DEADLINE_SECONDS="3"
    )
    fake_gemini.set_default(503)
    started = time.monotonic()
    resp = client.post("/chat", json={"message": QUESTION})
    assert time.monotonic() - started < 3 + 2  # the deadline, plus slack for a loaded machine
    assert resp.status_code == 503
    assert resp.get_json() == {"response": FRIENDLY_GENERATION_ERROR, "status": "error"}
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert fake_gemini.generate_calls == 4  # the first try and MAX_RETRIES retries
    summary = [r.fields for r in caplog.records if getattr(r, "fields", {}).get("event")]
    assert summary[-1]["status"] == 503 and summary[-1]["retries"] == 3
    assert "retrieval_ms" in summary[-1] and "generation_ms" in summary[-1]
    # Failures are not cached: once Gemini is back the same question is answered.
    fake_gemini.set_default(200)
    assert client.post("/chat", json={"message": QUESTION}).status_code == 200


def test_a_hung_connection_is_bounded_by_timeout_and_deadline(chat_client, fake_gemini):
    client = gemini_client(
        chat_client,
        fake_gemini,
        GENERATION_TIMEOUT_SECONDS="0.5",
        GENERATION_DEADLINE_SECONDS="1.5",
        MAX_RETRIES="5",
    )
    fake_gemini.set_default("hang")
    started = time.monotonic()
    resp = client.post("/chat", json={"message": QUESTION})
    assert time.monotonic() - started < 1.5 + 2
    assert resp.status_code == 503


def test_a_repeated_question_is_cached_without_gemini_or_retrieval(chat_client, fake_gemini):
    client = gemini_client(chat_client, fake_gemini)
    first = client.post("/chat", json={"message": QUESTION}).get_json()
    service = client.application.function.service
    embeds = service.embedder.calls
    second = client.post("/chat", json={"message": "  what SERVICES do you offer? "}).get_json()
    assert first["cached"] is False and second["cached"] is True
    assert second["response"] == first["response"]
    assert fake_gemini.generate_calls == 1
    assert service.embedder.calls == embeds  # no query embedding, so no retrieval either
    fresh = client.post("/chat", json={"message": QUESTION, "use_cache": False}).get_json()
    assert fresh["cached"] is False and fake_gemini.generate_calls == 2
    stats = client.get("/cache/stats").get_json()
    assert (stats["hits"], stats["misses"], stats["valid_entries"]) == (1, 2, 1)
    assert client.get("/health").get_json()["cache_size"] == 1


def test_concurrent_identical_use_cache_false_requests_make_one_gemini_call(
    chat_client, fake_gemini
):
    """use_cache=false skips the stored answer, not the flight: ten at once, one call."""
    client = gemini_client(chat_client, fake_gemini)
    fake_gemini.delay(0.5)
    barrier = threading.Barrier(10)
    bodies: list = [None] * 10

    def ask(n: int) -> None:
        barrier.wait()
        resp = client.post("/chat", json={"message": QUESTION, "use_cache": False})
        bodies[n] = (resp.status_code, resp.get_json())

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert fake_gemini.generate_calls == 1
    assert {status for status, _ in bodies} == {200}
    assert len({body["response"] for _, body in bodies}) == 1
    assert sorted(body["cached"] for _, body in bodies) == [False] + [True] * 9


def test_nothing_relevant_means_no_gemini_call(chat_client, fake_gemini):
    client = gemini_client(chat_client, fake_gemini)
    resp = client.post("/chat", json={"message": "Explain the rules of cricket in detail"})
    assert "info@romega-solutions.com" in resp.get_json()["response"]
    assert fake_gemini.generate_calls == 0


def test_gemini_gets_passages_as_quoted_context_and_the_system_instruction(
    chat_client, fake_gemini
):
    client = gemini_client(chat_client, fake_gemini)
    client.post("/chat", json={"message": "What is the senior consultant day rate?"})
    (call,) = fake_gemini.calls()
    body = call.body
    user_text = body["contents"][0]["parts"][0]["text"]
    assert user_text.startswith("<context>") and "1,150" in user_text
    # The question follows the data in its own escaped block, never as a bare line.
    assert user_text.endswith("\n\n<question>What is the senior consultant day rate?</question>")
    assert user_text.count("<question>") == 1 and "Visitor question:" not in user_text
    system = body["systemInstruction"]["parts"][0]["text"]
    assert "not instructions" in system and "<question>" in system
    assert "test-key-123456" not in str(body)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_ttl_expiry_and_a_new_snapshot_both_miss(bucket, embedder, built_snapshot, tmp_path):
    clock = Clock()
    settings = Settings.from_env(
        {"SNAPSHOT_DIR": str(tmp_path / "snap"), "CACHE_TTL": "60", "CONTROL_POLL_SECONDS": "5"}
    )
    service = ChatService(settings, storage=bucket, embedder=embedder, clock=clock)
    assert service.chat(QUESTION).cached is False
    assert service.chat(QUESTION).cached is True
    clock.now += 61
    assert service.chat(QUESTION).cached is False

    # Publish a second version; the next poll switches to it and the old answers miss.
    v2 = built_snapshot.manifest.version + "v2"
    archive = tmp_path / f"{v2}.tar.zst"
    shutil.copyfile(built_snapshot.archive, archive)
    publish(bucket, BuiltSnapshot(built_snapshot.manifest.renamed(v2), archive))
    service.follower.poll()
    result = service.chat(QUESTION)
    assert result.snapshot == v2 and result.cached is False


# -- the local servers' request limits (make run) ---------------------------------------------

RUN_LOCAL = ROOT / "scripts" / "run-local.sh"


def _raw_request(port: int, data: bytes, timeout: float = 10.0) -> tuple[bytes, float]:
    """Send ``data`` on a new connection; the first line of the reply and the seconds taken."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:  # refused mid-send: the reply is already waiting
            pass
        reply = b""
        while b"\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.split(b"\r\n", 1)[0], time.monotonic() - started


@pytest.fixture
def local_servers(tmp_path):
    """``make run``'s scripts/run-local.sh as a real process: (chat, admin, log, demo port)."""
    chat_port, admin_port, demo_port = free_port(), free_port(), free_port()
    env = child_env(
        PORT=chat_port,
        ADMIN_PORT=admin_port,
        DEMO_PORT=demo_port,
        VENV=Path(sys.executable).parent.parent,
        SNAPSHOT_URI=tmp_path / "bucket",  # empty: /health answers 503 at once
        ADMIN_TOKEN=secrets.token_urlsafe(24),
    )
    for name in ("GUNICORN_CMD_ARGS", "HOST", "ALLOWED_ORIGINS"):  # the script's own defaults
        env.pop(name, None)
    log_path = tmp_path / "run-local.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["bash", str(RUN_LOCAL)],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        for port in (chat_port, admin_port, demo_port):
            while True:
                assert proc.poll() is None, log_path.read_text()
                try:
                    status, _ = _raw_request(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                    if status.startswith(b"HTTP/1.1 "):
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
        yield chat_port, admin_port, log_path, demo_port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_make_run_refuses_huge_request_lines_and_headers_at_once(local_servers):
    """The functions-framework CLI reads any request line (a 64 MB URL took 310 s);
    make run's servers refuse one over 8 KiB with 414, and an oversized header with 431."""
    chat_port, admin_port, log_path, _ = local_servers
    for port in (chat_port, admin_port):
        for size in (64 * 1024, 8 * 1024 * 1024):
            line = b"GET /health?q=" + b"a" * size + b" HTTP/1.1\r\nHost: x\r\n\r\n"
            status, seconds = _raw_request(port, line)
            assert status == b"HTTP/1.1 414 URI Too Long", (port, size, status)
            assert seconds < 5, (port, size, seconds)
        header = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 16384 + b"\r\n\r\n"
        status, seconds = _raw_request(port, header)
        assert status.startswith(b"HTTP/1.1 431 "), (port, status)
        assert seconds < 5
        # An ordinary request is still served (503: no snapshot; 401: no admin token).
        status, _ = _raw_request(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status.split(b" ")[1] in (b"200", b"503", b"401"), status
    # Both listen on this machine only: nothing stands in front of them locally.
    printed = log_path.read_text()
    assert f"chat:  http://127.0.0.1:{chat_port}" in printed
    assert f"admin: http://127.0.0.1:{admin_port}" in printed


def test_make_run_serves_the_demo_page_with_the_widget_cross_origin(local_servers):
    """The demo company page's widget tag points at the chat port, whose CORS allows it."""
    chat_port, _, log_path, demo_port = local_servers
    demo = f"http://127.0.0.1:{demo_port}"
    assert f"demo:  {demo}" in log_path.read_text()
    status, body, headers = request("GET", f"{demo}/")
    page = body["_raw"]
    assert status == 200 and "Romega Solutions" in page
    assert f'<script src="http://127.0.0.1:{chat_port}/widget.js" async' in page
    assert f"connect-src http://127.0.0.1:{chat_port};" in headers["Content-Security-Policy"]
    _, _, chat_headers = request("GET", f"http://127.0.0.1:{chat_port}/", headers={"Origin": demo})
    assert chat_headers["Access-Control-Allow-Origin"] == demo
