"""GeminiGenerator and GeminiEmbedder: the real google-genai client against a fake Gemini server."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from chatbot.answering.answerers import build_prompt
from chatbot.answering.gemini import GeminiEmbedder, GeminiGenerator
from chatbot.answering.retrieval import Passage
from chatbot.config import Settings
from chatbot.errors import GenerationRejected, GenerationUnavailable
from harness.fake_gemini import FakeGemini, answer, default_answer, rate_limited

API_KEY = "AIza-test-key-never-logged"
PROMPT = (
    "Question: What does Romega do?\n<context>\n[1] About Romega (about.md)\n"
    "Romega Solutions builds data platforms. It was founded in 2015.\n</context>"
)


def settings_for(fake: FakeGemini, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "google_api_key": API_KEY,
        "gemini_model": "gemini-2.5-flash",
        "gemini_base_url": fake.url,
        "max_retries": 3,
        "retry_delay": 0.01,
        "generation_deadline_seconds": 5.0,
        "generation_timeout_seconds": 2.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


class Recorder:
    """A sleep seam that records the waits and skips them, with a clock that honours them."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.now = 1000.0

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def generate(generator: GeminiGenerator) -> str:
    return generator.generate(system_instruction="Answer from the context.", prompt=PROMPT).text


def test_transient_errors_are_retried_until_an_answer(fake_gemini: FakeGemini) -> None:
    fake_gemini.script([503, 503, 200])
    result = GeminiGenerator(settings_for(fake_gemini)).generate(
        system_instruction="Answer from the context.", prompt=PROMPT
    )
    assert result.text == "Based on the provided context: Romega Solutions builds data platforms."
    assert (result.attempts, result.retries) == (3, 2)
    assert fake_gemini.generate_calls == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_errors_are_not_retried(fake_gemini: FakeGemini, status: int) -> None:
    fake_gemini.set_default(status)
    with pytest.raises(GenerationRejected) as caught:
        generate(GeminiGenerator(settings_for(fake_gemini)))
    assert str(status) in caught.value.detail
    assert caught.value.status_code == 502
    assert fake_gemini.generate_calls == 1


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses(fake_gemini: FakeGemini, status: int) -> None:
    fake_gemini.script([status, answer("recovered")])
    assert generate(GeminiGenerator(settings_for(fake_gemini))) == "recovered"
    assert fake_gemini.generate_calls == 2


def test_gemini_down_gives_up_after_max_retries_within_the_deadline(
    fake_gemini: FakeGemini,
) -> None:
    fake_gemini.set_default(503)
    settings = settings_for(fake_gemini, max_retries=3, generation_deadline_seconds=3.0)
    started = time.monotonic()
    with pytest.raises(GenerationUnavailable) as caught:
        generate(GeminiGenerator(settings))
    assert time.monotonic() - started < 3.0 + 1.0
    assert fake_gemini.generate_calls == 4
    assert caught.value.status_code == 503
    assert caught.value.headers()["Retry-After"].isdigit()
    assert "4 attempt(s)" in caught.value.detail and "503" in caught.value.detail


def test_no_retries_when_max_retries_is_zero(fake_gemini: FakeGemini) -> None:
    fake_gemini.set_default(503)
    with pytest.raises(GenerationUnavailable):
        generate(GeminiGenerator(settings_for(fake_gemini, max_retries=0)))
    assert fake_gemini.generate_calls == 1


def test_backoff_doubles_with_jitter(fake_gemini: FakeGemini) -> None:
    fake_gemini.set_default(503)
    seams = Recorder()
    generator = GeminiGenerator(
        settings_for(fake_gemini, retry_delay=0.5, max_retries=3, generation_deadline_seconds=60),
        sleep=seams.sleep,
        clock=seams.clock,
    )
    with pytest.raises(GenerationUnavailable):
        generate(generator)
    assert len(seams.sleeps) == 3
    for n, slept in enumerate(seams.sleeps):
        assert 0.5 * 2**n <= slept <= 0.5 * 2**n + 0.5


def test_a_wait_past_the_deadline_ends_the_call(fake_gemini: FakeGemini) -> None:
    fake_gemini.set_default(503)
    seams = Recorder()
    generator = GeminiGenerator(
        settings_for(fake_gemini, retry_delay=1.0, generation_deadline_seconds=1.0),
        sleep=seams.sleep,
        clock=seams.clock,
    )
    with pytest.raises(GenerationUnavailable) as caught:
        generate(generator)
    assert fake_gemini.generate_calls == 1
    assert seams.sleeps == []
    assert "deadline" in caught.value.detail


def test_a_hung_gemini_is_bounded_by_the_timeout_and_deadline(fake_gemini: FakeGemini) -> None:
    fake_gemini.set_default("hang")
    settings = settings_for(
        fake_gemini, generation_timeout_seconds=0.5, generation_deadline_seconds=1.2
    )
    started = time.monotonic()
    with pytest.raises(GenerationUnavailable) as caught:
        generate(GeminiGenerator(settings))
    assert time.monotonic() - started < 1.2 + 1.0
    assert 2 <= fake_gemini.generate_calls <= 4  # timed-out attempts were retried
    assert "Timeout" in caught.value.detail


def test_a_dropped_connection_is_retried(fake_gemini: FakeGemini) -> None:
    fake_gemini.script(["drop", answer("second time lucky")])
    assert generate(GeminiGenerator(settings_for(fake_gemini))) == "second time lucky"
    assert fake_gemini.generate_calls == 2


def test_connection_refused_is_retried_then_unavailable() -> None:
    with FakeGemini() as fake:
        settings = settings_for(fake, max_retries=2)
    with pytest.raises(GenerationUnavailable) as caught:  # the server is gone
        generate(GeminiGenerator(settings))
    assert "3 attempt(s)" in caught.value.detail
    assert "ConnectError" in caught.value.detail


def test_a_429_asking_to_wait_past_the_deadline_fails_fast(fake_gemini: FakeGemini) -> None:
    fake_gemini.set_default(rate_limited(retry_delay=30.0))
    started = time.monotonic()
    with pytest.raises(GenerationUnavailable) as caught:
        generate(GeminiGenerator(settings_for(fake_gemini, generation_deadline_seconds=5.0)))
    assert time.monotonic() - started < 2.0
    assert fake_gemini.generate_calls == 1
    assert caught.value.retry_after == 30


def test_a_429_retry_delay_that_fits_is_honoured(fake_gemini: FakeGemini) -> None:
    fake_gemini.script([rate_limited(retry_delay=2.5), answer("after the pause")])
    seams = Recorder()
    generator = GeminiGenerator(settings_for(fake_gemini), sleep=seams.sleep, clock=seams.clock)
    assert generate(generator) == "after the pause"
    assert seams.sleeps == [2.5]


def test_a_retry_after_header_is_honoured(fake_gemini: FakeGemini) -> None:
    fake_gemini.script([rate_limited(retry_delay=None, retry_after=3), answer("ok")])
    seams = Recorder()
    generator = GeminiGenerator(settings_for(fake_gemini), sleep=seams.sleep, clock=seams.clock)
    assert generate(generator) == "ok"
    assert seams.sleeps == [3.0]


def test_a_blocked_response_is_rejected_without_retry(fake_gemini: FakeGemini) -> None:
    fake_gemini.set_default("blocked")
    with pytest.raises(GenerationRejected) as caught:
        generate(GeminiGenerator(settings_for(fake_gemini)))
    assert "SAFETY" in caught.value.detail
    assert fake_gemini.generate_calls == 1


def test_retries_are_logged_without_the_api_key(
    fake_gemini: FakeGemini, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_gemini.script([503, "drop", 200])
    generate(GeminiGenerator(settings_for(fake_gemini)))
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "chatbot.answering.retry" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 2
    assert warnings[0].startswith("Gemini attempt 1 failed with 503; retrying in ")
    assert warnings[1].startswith("Gemini attempt 2 failed with RemoteProtocolError; retrying")

    fake_gemini.set_default(503)
    with pytest.raises(GenerationUnavailable) as caught:
        generate(GeminiGenerator(settings_for(fake_gemini)))
    assert API_KEY not in caplog.text
    assert API_KEY not in caught.value.detail
    assert fake_gemini.requests[0].headers["x-goog-api-key"] == API_KEY  # it was sent, though


def test_the_request_carries_the_system_instruction_and_no_thinking_for_flash(
    fake_gemini: FakeGemini,
) -> None:
    GeminiGenerator(settings_for(fake_gemini)).generate(
        system_instruction="Only use the context.", prompt=PROMPT
    )
    (request,) = fake_gemini.calls("generateContent")
    assert request.path == "/v1/models/gemini-2.5-flash:generateContent"
    assert request.body["systemInstruction"]["parts"][0]["text"] == "Only use the context."
    assert request.body["contents"][0]["parts"][0]["text"] == PROMPT
    config = request.body["generationConfig"]
    assert config["temperature"] == 0.2
    assert config["maxOutputTokens"] == 1024
    thinking = config["thinkingConfig"]
    assert thinking.get("thinkingBudget", thinking.get("thinking_budget")) == 0


def test_no_thinking_config_for_other_models(fake_gemini: FakeGemini) -> None:
    generate(GeminiGenerator(settings_for(fake_gemini, gemini_model="gemini-2.5-pro")))
    (request,) = fake_gemini.calls("generateContent")
    assert "thinkingConfig" not in request.body["generationConfig"]


def test_one_client_is_shared_by_concurrent_calls(fake_gemini: FakeGemini) -> None:
    generator = GeminiGenerator(settings_for(fake_gemini))
    clients = []
    threads = [
        threading.Thread(target=lambda: clients.append(generator._client.get())) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(c) for c in clients}) == 1
    generate(generator)
    assert generator._client.get() is clients[0]


def test_embedder_batches_normalises_and_retries(fake_gemini: FakeGemini) -> None:
    fake_gemini.script([503], method="batchEmbedContents")
    embedder = GeminiEmbedder(settings_for(fake_gemini))
    texts = [f"document number {i} about Romega" for i in range(250)]
    vectors = embedder.embed(texts)
    assert vectors.shape == (250, embedder.dimension) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    sizes = [len(r.body["requests"]) for r in fake_gemini.calls("batchEmbedContents")]
    assert sizes == [100, 100, 100, 50]  # the first batch twice: one 503, then success
    assert embedder.model_id == "gemini-embedding-001"
    assert embedder.fingerprint() == {
        "backend": "gemini",
        "model": "gemini-embedding-001",
        "sha256": None,
        "dimension": 768,
    }
    np.testing.assert_array_equal(embedder.embed(texts[:3]), vectors[:3])
    assert embedder.embed([]).shape == (0, embedder.dimension)


def test_fake_default_answer_quotes_the_first_passage() -> None:
    assert default_answer(PROMPT).endswith("Romega Solutions builds data platforms.")
    passages = [
        Passage("We build data platforms. Since 2015.", "about.md", "About", "About > Us", 0.8),
        Passage("Pricing is per project.", "pricing.md", "Pricing", "Pricing", 0.5),
    ]
    assert default_answer(build_prompt("What do you do?", passages)) == (
        "Based on the provided context: We build data platforms."
    )
    assert "info@romega-solutions.com" in default_answer("no context here")


def test_fake_closes_with_hung_requests_outstanding() -> None:
    fake = FakeGemini().start()
    fake.set_default("hang")
    settings = settings_for(fake, generation_timeout_seconds=60, generation_deadline_seconds=60)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            generate(GeminiGenerator(settings, sleep=lambda s: None))
        except Exception as exc:
            errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    while fake.generate_calls == 0:
        time.sleep(0.01)
    started = time.monotonic()
    fake.close()
    worker.join(timeout=10)
    assert time.monotonic() - started < 5
    assert not worker.is_alive()
    assert isinstance(errors[0], GenerationUnavailable)


def test_fake_runs_as_a_process() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.fake_gemini", "--port", "0", "--failure-rate", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.split()[-1]
        settings = Settings(google_api_key=API_KEY, gemini_base_url=url, retry_delay=0.01)
        assert generate(GeminiGenerator(settings)).startswith("Based on the provided context")
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
