"""Streaming and events over a real functions-framework process, read by a real SSE client."""

from __future__ import annotations

import json
import signal
import time

import httpx
import pytest
from httpx_sse import connect_sse

from chatbot.bucket.layout import EVENTS_PREFIX
from harness.processes import FunctionProcess, request
from tests.conftest import CHAT_SOURCE

QUESTION = "What is the senior consultant day rate?"


@pytest.fixture
def chat_process(bucket, tmp_path, fake_gemini):
    procs: list[FunctionProcess] = []

    def start(**env) -> FunctionProcess:
        base = {
            "SNAPSHOT_URI": bucket.uri,
            "SNAPSHOT_DIR": str(tmp_path / "snap"),
            "GOOGLE_API_KEY": "test-key-123456",
            "GEMINI_BASE_URL": fake_gemini.url,
            "RETRY_DELAY": "0.01",
        }
        proc = FunctionProcess("chat", CHAT_SOURCE, {**base, **env}, tmp_path / "chat.log")
        procs.append(proc)
        proc.start()
        proc.wait_healthy()
        return proc

    yield start
    for proc in procs:
        proc.stop()


def test_a_real_sse_client_reads_meta_then_deltas_equal_to_the_json_answer(
    chat_process, fake_gemini
):
    proc = chat_process()
    fake_gemini.stream_delays(between_chunks=0.01)
    with httpx.Client(base_url=proc.url, timeout=30) as client:
        body = {"message": QUESTION, "stream": True, "use_cache": False}
        with connect_sse(client, "POST", "/chat", json=body) as source:
            assert source.response.headers["content-type"].startswith("text/event-stream")
            events = [(e.event, e.json()) for e in source.iter_sse()]
        whole = client.post("/chat", json={"message": QUESTION, "use_cache": False}).json()
    names = [name for name, _ in events]
    assert names[0] == "meta" and names[-1] == "done" and set(names[1:-1]) == {"delta"}
    assert "".join(data["text"] for name, data in events if name == "delta") == whole["response"]
    assert events[0][1]["sources"] == whole["sources"]


def test_a_visitor_who_disconnects_stops_the_gemini_call(chat_process, fake_gemini):
    proc = chat_process()
    fake_gemini.stream_delays(between_chunks=0.4)
    with httpx.Client(base_url=proc.url, timeout=30) as client:
        body = {"message": QUESTION, "stream": True}
        with connect_sse(client, "POST", "/chat", json=body) as source:
            for event in source.iter_sse():
                if event.event == "delta":
                    break  # the visitor closes the tab after the first words
    deadline = time.monotonic() + 10
    while fake_gemini.disconnects < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_gemini.disconnects == 1 and fake_gemini.stream_calls == 1
    # Nothing half-written was cached: the next visitor gets a whole, fresh answer.
    status, answer, _ = request("POST", f"{proc.url}/chat", {"message": QUESTION})
    assert status == 200 and answer["cached"] is False and fake_gemini.stream_calls == 1


def test_sigterm_leaves_the_answered_questions_events_in_the_bucket(chat_process, bucket):
    proc = chat_process(EVENTS_FLUSH_SECONDS="3600")  # only the shutdown flush can write them
    ids = []
    for message in (QUESTION, "What is the boiling point of tungsten in kelvin?"):
        status, answer, _ = request("POST", f"{proc.url}/chat", {"message": message})
        assert status == 200
        ids.append(answer["answer_id"])
    status, _, _ = request("POST", f"{proc.url}/feedback", {"answer_id": ids[0], "rating": "up"})
    assert status == 202 and bucket.list(EVENTS_PREFIX) == []
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGTERM)  # what Cloud Run sends the container's main process
    proc.proc.wait(timeout=30)
    events = [
        json.loads(line)
        for key in bucket.list(EVENTS_PREFIX)
        for line in bucket.read(key)[0].splitlines()
    ]
    assert sorted((e["type"], e["answer_id"]) for e in events) == sorted(
        [("answer", ids[0]), ("dont_know", ids[1]), ("feedback", ids[0])]
    )
