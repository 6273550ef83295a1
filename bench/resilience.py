"""Resilience: what visitors see when Gemini fails.

The chat server talks to the fake Gemini (its own process) through the real google-genai
client with MAX_RETRIES=3 and RETRY_DELAY=0.05. Every request is uncached
(``use_cache: false``), so each one calls Gemini. Three runs, same request count each:

- Gemini healthy (the baseline for added latency),
- 5% of Gemini calls answered 503 (seeded),
- Gemini down (every call 503) with GENERATION_DEADLINE_SECONDS=2: every visitor must get a
  fast, friendly 503 with Retry-After.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from pathlib import Path

from bench.indexing import BuiltCorpus
from bench.latency import server_log_fields
from bench.servers import FakeGeminiProcess, HttpClient, bench_env, chat_server
from bench.stats import summarize_ms
from chatbot.errors import FRIENDLY_GENERATION_ERROR

CONCURRENCY = 4
GEMINI_DELAY = 0.05


def _drive(port: int, questions: list[str], total: int) -> list[tuple[int, dict, dict, float]]:
    """``total`` uncached /chat requests over CONCURRENCY keep-alive connections."""
    results: list[tuple[int, dict, dict, float]] = []
    lock = threading.Lock()

    def worker(slot: int) -> None:
        client = HttpClient(port, timeout=60)
        try:
            for i in range(slot, total, CONCURRENCY):
                try:
                    outcome = client.chat(questions[i % len(questions)], use_cache=False)
                except OSError:
                    outcome = (0, {}, {}, 0.0)
                    client.close()
                with lock:
                    results.append(outcome)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(CONCURRENCY)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def scenario(
    label: str,
    sample: BuiltCorpus,
    workdir: Path,
    total: int,
    failure_rate: float,
    extra_env: dict[str, str] | None = None,
) -> dict:
    """One run: a fresh fake Gemini and chat server, ``total`` requests."""
    run_dir = workdir / f"resilience-{uuid.uuid4().hex[:6]}"
    run_dir.mkdir(parents=True)
    log_file = run_dir / "server.log"
    try:
        with FakeGeminiProcess(failure_rate=failure_rate, delay=GEMINI_DELAY) as gemini:
            env = bench_env(
                SNAPSHOT_URI=sample.bucket,
                SNAPSHOT_DIR=run_dir / "snap",
                LOG_FORMAT="json",
                GOOGLE_API_KEY="bench-key",
                GEMINI_BASE_URL=gemini.url,
                MAX_RETRIES=3,
                RETRY_DELAY=0.05,
                **(extra_env or {}),
            )
            with chat_server(env, log_file) as server:
                server.wait_up()
                warm = server.client()
                # Restore, load the model and the Gemini client first (a 503 is expected when
                # Gemini is down): cold-start costs stay out of the figures.
                warm.chat(sample.questions[-1], use_cache=False)
                warm.close()
                before = len(server_log_fields(log_file))
                outcomes = _drive(server.port, sample.questions, total)
                rows = server_log_fields(log_file)[before:]
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    statuses: dict[str, int] = {}
    for status, _, _, _ in outcomes:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    errors = [o for o in outcomes if o[0] != 200]
    friendly = sum(
        1
        for status, headers, body, _ in errors
        if status == 503
        and "Retry-After" in headers
        and (body or {}).get("response") == FRIENDLY_GENERATION_ERROR
        and (body or {}).get("status") == "error"
    )
    retries = [r.get("retries", 0) or 0 for r in rows]
    return {
        "label": label,
        "failure_rate": failure_rate,
        "requests": len(outcomes),
        "statuses": statuses,
        "visitor_errors": len(errors),
        "visitor_error_share": round(len(errors) / len(outcomes), 5) if outcomes else None,
        "friendly_503s": friendly,
        "latency_all": summarize_ms([o[3] for o in outcomes]),
        "latency_errors": summarize_ms([o[3] for o in errors]) if errors else None,
        "requests_retried": sum(1 for r in retries if r),
        "retries_total": sum(retries),
    }


def run(corpora: list[BuiltCorpus], quick: bool, workdir: Path) -> dict:
    """The three scenarios on the sample snapshot."""
    total = 300 if quick else 2000
    down_total = 50 if quick else 200
    sample = next(c for c in corpora if c.name == "sample")
    healthy = scenario("Gemini healthy", sample, workdir, total, 0.0)
    flaky = scenario("5% of Gemini calls fail (503)", sample, workdir, total, 0.05)
    down = scenario(
        "Gemini down",
        sample,
        workdir,
        down_total,
        1.0,
        {"GENERATION_DEADLINE_SECONDS": "2"},
    )
    added = {
        key: round(flaky["latency_all"][key] - healthy["latency_all"][key], 3)
        for key in ("p50_ms", "p95_ms", "p99_ms", "mean_ms")
    }
    return {
        "concurrency": CONCURRENCY,
        "gemini_delay_ms": GEMINI_DELAY * 1000,
        "max_retries": 3,
        "retry_delay_s": 0.05,
        "scenarios": [healthy, flaky, down],
        "added_latency_at_5pct": added,
    }
