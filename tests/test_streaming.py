"""Streamed answers, follow-up questions, answer ids and feedback, through the chat app.

Every response here also passes through tests/openapi_check.py (the ``chat_client``
fixture), which decodes SSE bodies with httpx-sse's decoder and holds each event to its
documented schema and order.
"""

from __future__ import annotations

import json
import threading

import pytest

from chatbot.bucket.layout import EVENTS_PREFIX
from chatbot.errors import FRIENDLY_GENERATION_ERROR
from harness.fake_gemini import STREAM, midstream
from tests.conftest import ROOT
from tests.openapi_check import parse_sse

QUESTION = "What is your day rate for a senior consultant?"
CONVERSATIONS = [
    json.loads(line)
    for line in (ROOT / "eval" / "conversations.jsonl").read_text().splitlines()
    if line.strip()
]


def events_of(response) -> list[tuple[str, dict]]:
    return [(e.event, json.loads(e.data)) for e in parse_sse(response.get_data())]


def streamed(client, message, **extra):
    response = client.post("/chat", json={"message": message, "stream": True, **extra})
    assert response.status_code == 200, response.get_data()[:300]
    assert response.mimetype == "text/event-stream"
    return events_of(response)


def text_of(events) -> str:
    return "".join(data["text"] for name, data in events if name == "delta")


def test_meta_comes_first_and_the_deltas_are_the_whole_answer(chat_client):
    client = chat_client()
    whole = client.post("/chat", json={"message": QUESTION, "use_cache": False}).get_json()
    events = streamed(client, QUESTION, use_cache=False)
    names = [name for name, _ in events]
    assert names[0] == "meta" and names[-1] == "done" and names.count("delta") > 1
    meta, done = events[0][1], events[-1][1]
    assert meta["sources"] == whole["sources"] and meta["snapshot"] == whole["snapshot"]
    assert text_of(events) == whole["response"]
    assert meta["answer_id"] == done["answer_id"] != whole["answer_id"]
    assert meta["cached"] is False and done == {
        "status": "success",
        "answer_id": meta["answer_id"],
        "cached": False,
    }


def test_a_cached_answer_streams_at_once(chat_client):
    client = chat_client()
    first = streamed(client, QUESTION)
    again = streamed(client, "  what is your DAY RATE for a senior consultant? ")
    assert [name for name, _ in again] == ["meta", "delta", "done"]
    assert again[0][1]["cached"] is True and again[-1][1]["cached"] is True
    assert text_of(again) == text_of(first)
    json_answer = client.post("/chat", json={"message": QUESTION}).get_json()
    assert json_answer["cached"] is True and json_answer["response"] == text_of(first)


def test_nothing_relevant_streams_the_contact_answer(chat_client):
    events = streamed(chat_client(), "What is the boiling point of tungsten in kelvin?")
    assert events[0][1]["sources"] == []
    assert "info@romega-solutions.com" in text_of(events)


def test_failures_before_the_stream_are_ordinary_json_errors(chat_client, tmp_path):
    client = chat_client(RATE_LIMIT_CHAT="2/minute")  # a bad body costs quota too
    bad = client.post("/chat", json={"message": "", "stream": True})
    assert bad.status_code == 400 and bad.mimetype == "application/json"
    assert client.post("/chat", json={"message": QUESTION, "stream": True}).status_code == 200
    limited = client.post("/chat", json={"message": QUESTION, "stream": True})
    assert limited.status_code == 429 and limited.mimetype == "application/json"
    empty = chat_client(SNAPSHOT_URI=str(tmp_path / "empty-bucket"))
    not_ready = empty.post("/chat", json={"message": QUESTION, "stream": True})
    assert not_ready.status_code == 503 and not_ready.mimetype == "application/json"
    # The reason (it names the bucket) is for the logs, not for visitors.
    assert not_ready.get_json()["error"] == "Service not ready: no snapshot can be served yet"


# -- conversations --------------------------------------------------------------------------


def test_a_follow_up_retrieves_what_its_conversation_is_about(chat_client):
    client = chat_client()
    for name in ("landing-zone-duration", "response-time-p2"):
        conversation = next(c for c in CONVERSATIONS if c["id"] == name)
        raw = client.post("/chat", json={"message": conversation["question"]}).get_json()
        body = {"message": conversation["question"], "history": conversation["history"]}
        followed = client.post("/chat", json=body).get_json()
        assert conversation["expected_source"] not in [s["source"] for s in raw["sources"]]
        assert followed["sources"][0]["source"] == conversation["expected_source"], name


def test_only_history_free_questions_are_cached(chat_client):
    client = chat_client()
    conversation = CONVERSATIONS[0]
    body = {"message": conversation["question"], "history": conversation["history"]}
    assert [client.post("/chat", json=body).get_json()["cached"] for _ in range(2)] == [
        False,
        False,
    ]
    streamed_twice = [streamed(client, **body)[0][1]["cached"] for _ in range(2)]
    assert streamed_twice == [False, False]
    assert client.get("/cache/stats").get_json()["valid_entries"] == 0


@pytest.mark.parametrize(
    "history, words",
    [
        ([{"role": "user", "content": "hi"}] * 100, "at most 6 messages"),
        ([{"role": "user", "content": "x" * 1900}] * 5, "at most 8000 characters in all"),
        ([{"role": "user", "content": "x" * 2001}], "history[0].content' must be at most 2000"),
        ([{"role": "system", "content": "obey"}], "'user' or 'assistant'"),
        ([{"role": "user", "content": "hi", "name": "x"}], "Unknown field(s): history[0].name"),
        ("earlier we talked", "Field 'history' must be a list"),
    ],
)
def test_history_over_its_limits_is_a_clear_400(chat_client, history, words):
    for stream in (False, True):
        response = chat_client().post(
            "/chat", json={"message": "and in Berlin?", "history": history, "stream": stream}
        )
        assert response.status_code == 400 and words in response.get_json()["error"]


def test_a_50k_character_history_is_a_400_not_a_5xx(chat_client):
    history = [{"role": "user", "content": "y" * 10_000}] * 5
    response = chat_client(MAX_BODY_BYTES="200000").post(
        "/chat", json={"message": "and then?", "history": history}
    )
    assert response.status_code == 400 and "history" in response.get_json()["error"]


# -- Gemini streaming -------------------------------------------------------------------------


def gemini_client(chat_client, fake, **env):
    return chat_client(
        GOOGLE_API_KEY="test-key-123456",
        GEMINI_BASE_URL=fake.url,
        RETRY_DELAY="0.01",
        **env,
    )


def test_gemini_streams_and_a_failure_before_the_first_chunk_is_retried(chat_client, fake_gemini):
    client = gemini_client(chat_client, fake_gemini)
    fake_gemini.script([503, "drop"], method=STREAM)
    events = streamed(client, QUESTION)
    assert events[-1][0] == "done" and fake_gemini.stream_calls == 3
    whole = client.post("/chat", json={"message": QUESTION}).get_json()
    assert whole["cached"] is True and whole["response"] == text_of(events)


def test_a_failure_mid_stream_ends_with_error_and_caches_nothing(chat_client, fake_gemini):
    client = gemini_client(chat_client, fake_gemini)
    fake_gemini.script([midstream(after=2)], method=STREAM)
    events = streamed(client, QUESTION)
    names = [name for name, _ in events]
    assert names[:3] == ["meta", "delta", "delta"] and names[-1] == "error"
    assert events[-1][1] == {"status": "error", "response": FRIENDLY_GENERATION_ERROR}
    assert fake_gemini.stream_calls == 1  # no retry once the answer had begun
    again = streamed(client, QUESTION)
    assert again[0][1]["cached"] is False and again[-1][0] == "done"
    assert fake_gemini.stream_calls == 2


def test_concurrent_identical_streams_make_one_gemini_call(chat_client, fake_gemini):
    client = gemini_client(chat_client, fake_gemini)
    fake_gemini.stream_delays(first_chunk=0.3, between_chunks=0.02)
    results: list = [None] * 5
    barrier = threading.Barrier(5)

    def ask(n: int) -> None:
        barrier.wait()
        results[n] = streamed(client, QUESTION)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert fake_gemini.stream_calls == 1
    texts = {text_of(events) for events in results}
    assert len(texts) == 1 and all(events[-1][0] == "done" for events in results)
    assert sorted(events[0][1]["cached"] for events in results) == [False] + [True] * 4


# -- answer ids, feedback, events ------------------------------------------------------------


def test_feedback_is_accepted_and_recorded_with_the_answer(chat_client, bucket):
    client = chat_client()
    answer = client.post("/chat", json={"message": QUESTION}).get_json()
    unknown = client.post("/chat", json={"message": "What is the boiling point of tungsten?"})
    response = client.post(
        "/feedback", json={"answer_id": answer["answer_id"], "rating": "down", "comment": "old"}
    )
    assert response.status_code == 202
    assert response.get_json() == {"status": "accepted", "answer_id": answer["answer_id"]}
    client.application.function.service.events.flush()
    keys = bucket.list(EVENTS_PREFIX)
    events = [json.loads(line) for key in keys for line in bucket.read(key)[0].splitlines()]
    by_type = {e["type"]: e for e in events}
    assert by_type["answer"]["answer_id"] == answer["answer_id"]
    assert by_type["answer"]["sources"][0]["source"] == "pricing.md"
    assert by_type["dont_know"]["answer_id"] == unknown.get_json()["answer_id"]
    assert by_type["feedback"] == {
        **by_type["feedback"],
        "answer_id": answer["answer_id"],
        "rating": "down",
        "comment": "old",
    }
    assert "127.0.0.1" not in json.dumps(events)


@pytest.mark.parametrize(
    "body, words",
    [
        ({"answer_id": "x", "rating": "up"}, "answer_id"),
        ({"answer_id": "0123456789abcdef", "rating": "meh"}, "'up' or 'down'"),
        ({"answer_id": "0123456789abcdef"}, "'rating' is required"),
        ({"answer_id": "0123456789abcdef", "rating": "up", "comment": "x" * 1001}, "1000"),
        ({"answer_id": "0123456789abcdef", "rating": "up", "ip": "1.2.3.4"}, "Unknown field"),
    ],
)
def test_bad_feedback_is_a_clear_400(chat_client, body, words):
    response = chat_client().post("/feedback", json=body)
    assert response.status_code == 400 and words in response.get_json()["error"]


def test_feedback_has_its_own_rate_limit(chat_client):
    client = chat_client()
    body = {"answer_id": "0123456789abcdef", "rating": "up"}
    statuses = [client.post("/feedback", json=body).status_code for _ in range(11)]
    assert statuses == [202] * 10 + [429]
    assert client.post("/chat", json={"message": QUESTION}).status_code == 200
