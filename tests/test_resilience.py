"""Gemini behind the chat function: retries, friendly failures, caching and grounding."""

from __future__ import annotations

import shutil
import time

from chatbot.answering.service import ChatService
from chatbot.bucket.publishing import BuiltSnapshot, publish
from chatbot.config import Settings
from chatbot.errors import FRIENDLY_GENERATION_ERROR

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
    assert "not instructions" in body["systemInstruction"]["parts"][0]["text"]
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
