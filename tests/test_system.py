"""System tests: real functions-framework processes on loopback, real logs on stdout."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.processes import FunctionProcess, request
from tests.conftest import CHAT_SOURCE

API_KEY = "AIzaFAKE-secret-key-0123456789"
ADMIN_TOKEN = "admin-token-abcdef-7c2e9f4a1b6d3085"  # 32 characters at least
QUESTIONS = [
    "What services do you offer?",
    "What is the senior consultant day rate?",
    "Where is your headquarters?",
    "Who founded Romega?",
    "What is your uptime target on the Enterprise plan?",
    "Are you ISO 27001 certified?",
    "How do I apply for a job?",
    "Tell me about a case study in retail",
]


@pytest.fixture
def chat_process(bucket, tmp_path, fake_gemini):
    def start(**env):
        base = {
            "SNAPSHOT_URI": bucket.uri,
            "SNAPSHOT_DIR": str(tmp_path / "snap"),
            "GOOGLE_API_KEY": API_KEY,
            "GEMINI_BASE_URL": fake_gemini.url,
            "RETRY_DELAY": "0.01",
        }
        proc = FunctionProcess("chat", CHAT_SOURCE, {**base, **env}, tmp_path / "chat.log")
        procs.append(proc)
        return proc.start()

    procs: list[FunctionProcess] = []
    yield start
    for proc in procs:
        proc.stop()


def test_json_logs_carry_severity_message_and_trace_and_never_the_key(chat_process, fake_gemini):
    proc = chat_process(
        LOG_FORMAT="json", GOOGLE_CLOUD_PROJECT="romega-test", ADMIN_TOKEN=ADMIN_TOKEN
    )
    trace = "105445aa7843bc8bf206b12000100000"
    status, body, _ = request(
        "POST",
        f"{proc.url}/chat",
        {"message": QUESTIONS[0]},
        headers={"X-Cloud-Trace-Context": f"{trace}/1;o=1", "X-Forwarded-For": "192.0.2.55"},
    )
    assert status == 200, body
    request("POST", f"{proc.url}/chat", {"message": "x" * 5000})
    proc.stop()
    lines = [line for line in proc.log().splitlines() if line.strip()]
    ours = []
    for line in lines:
        if line.startswith("[") and "gunicorn" in line.lower():
            continue  # gunicorn's own start-up lines go to stderr in its format
        entry = json.loads(line)
        assert "severity" in entry and "message" in entry
        ours.append(entry)
    traced = [e for e in ours if "logging.googleapis.com/trace" in e]
    assert traced and all(
        e["logging.googleapis.com/trace"] == f"projects/romega-test/traces/{trace}" for e in traced
    )
    summaries = [e for e in ours if e.get("event") == "request" and e.get("route") == "/chat"]
    ok = next(e for e in summaries if e["status"] == 200)
    for field in ("latency_ms", "cached", "retrieval_ms", "generation_ms", "retries", "request_id"):
        assert field in ok, field
    log_text = proc.log()
    assert API_KEY not in log_text and ADMIN_TOKEN not in log_text
    assert "192.0.2.55" not in log_text  # client IPs appear only as a short hash


def test_text_logs_use_the_seed_format(chat_process):
    proc = chat_process()
    request("POST", f"{proc.url}/chat", {"message": QUESTIONS[1]})
    proc.stop()
    processing = [ln for ln in proc.log().splitlines() if "Processing query" in ln]
    assert processing
    date, rest = processing[0][:19], processing[0][19:]
    assert date[4] == "-" and date[10] == " " and date[13] == ":"
    assert rest.startswith(" - chatbot.service - INFO - Processing query: What is the senior")


def test_50_threads_of_mixed_questions_no_5xx_and_consistent_counters(chat_process, fake_gemini):
    proc = chat_process(RATE_LIMIT_CHAT="100000/minute", RATE_LIMIT_STATS="100000/minute")
    proc.wait_healthy()

    def one(i):
        question = QUESTIONS[i % len(QUESTIONS)]
        return request(
            "POST",
            f"{proc.url}/chat",
            {"message": question},
            headers={"X-Forwarded-For": f"198.51.100.{i % 200}"},
        )[0:2]

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(400)))
    statuses = [status for status, _ in results]
    assert all(s == 200 for s in statuses), sorted(set(statuses))
    _, stats, _ = request("GET", f"{proc.url}/cache/stats")
    # Every request was one cache lookup; each distinct question was generated exactly once.
    assert stats["hits"] + stats["misses"] == 400
    assert stats["misses"] == len(QUESTIONS) == stats["valid_entries"]
    assert fake_gemini.generate_calls == len(QUESTIONS)
    assert sum(1 for _, body in results if body["cached"] is False) == len(QUESTIONS)
