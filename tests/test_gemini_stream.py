"""GeminiGenerator.stream: the real google-genai streaming call against the fake Gemini server.

Retried like ``generate`` until the first chunk, never after it; bounded by the deadline;
closing the iterator closes the HTTP response.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from chatbot.answering.gemini import GeminiGenerator
from chatbot.config import Settings
from chatbot.errors import GenerationRejected, GenerationUnavailable
from chatbot.logs import request_context
from harness.fake_gemini import (
    STREAM,
    FakeGemini,
    Outcome,
    answer,
    default_answer,
    midstream,
    split_chunks,
)
from tests.test_gemini import API_KEY, PROMPT, Recorder, settings_for

FULL_ANSWER = default_answer(PROMPT)  # what the fake answers PROMPT with
CHUNKS = split_chunks(FULL_ANSWER)


_made: list[GeminiGenerator] = []


def make_generator(settings: Settings, **seams: Callable) -> GeminiGenerator:
    """A generator whose HTTP client is closed after the test."""
    generator = GeminiGenerator(settings, **seams)
    _made.append(generator)
    return generator


@pytest.fixture(autouse=True)
def close_generators() -> Iterator[None]:
    yield
    while _made:
        _made.pop().close()


def stream(generator: GeminiGenerator) -> Iterator[str]:
    return generator.stream(system_instruction="Answer from the context.", prompt=PROMPT)


def collect(chunks: Iterator[str]) -> tuple[list[str], BaseException | None]:
    """Every chunk the iterator gave, and the error that ended it (None: it finished)."""
    received: list[str] = []
    try:
        for chunk in chunks:
            received.append(chunk)
    except Exception as exc:
        return received, exc
    return received, None


def wait_for(condition: Callable[[], bool], seconds: float = 2.0) -> bool:
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def test_chunks_arrive_in_order_and_make_up_the_full_answer(fake_gemini: FakeGemini) -> None:
    chunks = stream(make_generator(settings_for(fake_gemini)))
    assert fake_gemini.stream_calls == 0  # lazy: nothing is sent before the first next()
    received = list(chunks)
    assert 4 <= len(CHUNKS) <= 8
    assert received == CHUNKS
    assert "".join(received) == FULL_ANSWER
    assert (fake_gemini.stream_calls, fake_gemini.generate_calls) == (1, 0)


def test_the_stream_request_carries_the_same_config_as_generate(fake_gemini: FakeGemini) -> None:
    list(stream(make_generator(settings_for(fake_gemini))))
    (request,) = fake_gemini.calls(STREAM)
    assert request.path == "/v1/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert request.body["systemInstruction"]["parts"][0]["text"] == "Answer from the context."
    assert request.body["contents"][0]["parts"][0]["text"] == PROMPT
    config = request.body["generationConfig"]
    assert (config["temperature"], config["maxOutputTokens"]) == (0.2, 1024)
    thinking = config["thinkingConfig"]
    assert thinking.get("thinkingBudget", thinking.get("thinking_budget")) == 0
    assert request.headers["x-goog-api-key"] == API_KEY


def test_a_scripted_answer_is_streamed_in_pieces(fake_gemini: FakeGemini) -> None:
    text = "Romega builds data platforms for mid-sized companies across Europe, since 2015."
    fake_gemini.script([answer(text)], method=STREAM)
    received = list(stream(make_generator(settings_for(fake_gemini))))
    assert len(received) > 1 and "".join(received) == text


@pytest.mark.parametrize(
    "failure", [503, 429, "drop", midstream(after=0)], ids=["503", "429", "drop", "headers-only"]
)
def test_a_failure_before_the_first_chunk_is_retried(
    fake_gemini: FakeGemini, failure: Outcome
) -> None:
    fake_gemini.script([failure], method=STREAM)
    with request_context("req-1", None) as context:
        received = list(stream(make_generator(settings_for(fake_gemini))))
    assert received == CHUNKS
    assert fake_gemini.stream_calls == 2
    assert context.fields["retries"] == 1  # on the summary line, as for generate


def test_a_stream_that_hangs_before_its_first_chunk_times_out_and_is_retried(
    fake_gemini: FakeGemini,
) -> None:
    fake_gemini.script(["hang"], method=STREAM)
    settings = settings_for(fake_gemini, generation_timeout_seconds=0.3)
    assert "".join(stream(make_generator(settings))) == FULL_ANSWER
    assert fake_gemini.stream_calls == 2


def test_retries_before_the_first_chunk_wait_like_generate(fake_gemini: FakeGemini) -> None:
    fake_gemini.set_default(503)
    seams = Recorder()
    generator = make_generator(
        settings_for(fake_gemini, retry_delay=0.5, max_retries=3, generation_deadline_seconds=60),
        sleep=seams.sleep,
        clock=seams.clock,
    )
    with pytest.raises(GenerationUnavailable):
        list(stream(generator))
    assert len(seams.sleeps) == 3
    for n, slept in enumerate(seams.sleeps):
        assert 0.5 * 2**n <= slept <= 0.5 * 2**n + 0.5


def test_exhausted_retries_are_unavailable_in_bounded_time(fake_gemini: FakeGemini) -> None:
    fake_gemini.set_default(503)
    settings = settings_for(fake_gemini, max_retries=3, generation_deadline_seconds=3.0)
    started = time.monotonic()
    received, error = collect(stream(make_generator(settings)))
    assert time.monotonic() - started < 3.0 + 1.0
    assert received == []
    assert isinstance(error, GenerationUnavailable)
    assert "4 attempt(s)" in error.detail and "503" in error.detail
    assert fake_gemini.stream_calls == 4


@pytest.mark.parametrize("refusal", [400, "blocked", answer(""), answer("  \n ")])
def test_a_refused_or_empty_stream_is_rejected_without_retry(
    fake_gemini: FakeGemini, refusal: Outcome
) -> None:
    fake_gemini.set_default(refusal)
    with pytest.raises(GenerationRejected):
        list(stream(make_generator(settings_for(fake_gemini))))
    assert fake_gemini.stream_calls == 1


@pytest.mark.parametrize(
    "failure",
    [midstream(after=2), midstream(after=2, status=503), midstream(after=len(CHUNKS))],
    ids=["dropped", "error-event", "no-end"],
)
def test_a_failure_after_the_first_chunk_ends_the_stream_without_retry(
    fake_gemini: FakeGemini, failure: Outcome
) -> None:
    fake_gemini.script([failure], method=STREAM)
    received, error = collect(stream(make_generator(settings_for(fake_gemini))))
    assert received == CHUNKS[: failure.midstream_after]  # type: ignore[union-attr]
    assert isinstance(error, GenerationUnavailable)
    assert f"after {len(received)} chunk(s)" in error.detail
    assert fake_gemini.stream_calls == 1


def test_a_stall_after_the_first_chunk_is_cut_by_the_read_timeout(
    fake_gemini: FakeGemini,
) -> None:
    fake_gemini.script([midstream(after=2, hang=True)], method=STREAM)
    settings = settings_for(
        fake_gemini, generation_timeout_seconds=0.5, generation_deadline_seconds=5.0
    )
    started = time.monotonic()
    received, error = collect(stream(make_generator(settings)))
    assert time.monotonic() - started < 0.5 + 0.7
    assert received == CHUNKS[:2]
    assert isinstance(error, GenerationUnavailable) and "Timeout" in error.detail
    assert fake_gemini.stream_calls == 1


def test_the_deadline_bounds_a_slow_stream(fake_gemini: FakeGemini) -> None:
    fake_gemini.stream_delays(between_chunks=0.4)  # the whole stream would take 2 s
    settings = settings_for(
        fake_gemini, generation_deadline_seconds=1.0, generation_timeout_seconds=2.0
    )
    started = time.monotonic()
    received, error = collect(stream(make_generator(settings)))
    elapsed = time.monotonic() - started
    assert isinstance(error, GenerationUnavailable) and "deadline" in error.detail
    assert elapsed < 1.0 + 0.4 + 0.3  # checked as chunks arrive: at most one gap late
    assert 2 <= len(received) < len(CHUNKS)
    assert received == CHUNKS[: len(received)]
    assert wait_for(lambda: fake_gemini.disconnects == 1)  # the response was closed


def test_closing_the_iterator_closes_the_connection(fake_gemini: FakeGemini) -> None:
    fake_gemini.stream_delays(between_chunks=0.5)  # the rest would take 2.5 s
    generator = make_generator(settings_for(fake_gemini))
    threads = threading.active_count()
    chunks = stream(generator)
    assert next(chunks) == CHUNKS[0]
    assert fake_gemini.open_connections == 1
    started = time.monotonic()
    chunks.close()  # what the web layer does when the visitor leaves
    assert wait_for(lambda: fake_gemini.disconnects == 1, seconds=1.5)
    assert wait_for(lambda: fake_gemini.open_connections == 0, seconds=0.5)
    assert time.monotonic() - started < 1.0
    assert wait_for(lambda: threading.active_count() <= threads, seconds=1.0)
    assert fake_gemini.stream_calls == 1
    # the client is still usable afterwards
    fake_gemini.stream_delays()
    assert "".join(stream(generator)) == FULL_ANSWER


def test_a_completed_stream_leaves_its_connection_for_reuse(fake_gemini: FakeGemini) -> None:
    generator = make_generator(settings_for(fake_gemini))
    for _ in range(3):
        assert "".join(stream(generator)) == FULL_ANSWER
    assert fake_gemini.open_connections == 1  # one keep-alive connection, reused
    assert fake_gemini.disconnects == 0
    generator.close()
    assert wait_for(lambda: fake_gemini.open_connections == 0)


def test_fake_failure_rates_reach_stream_calls(fake_gemini: FakeGemini) -> None:
    fake_gemini.midstream_failure_rate(1.0)
    received, error = collect(stream(make_generator(settings_for(fake_gemini))))
    assert 1 <= len(received) < len(CHUNKS) and isinstance(error, GenerationUnavailable)

    fake_gemini.reset()
    fake_gemini.failure_rate(1.0)
    with pytest.raises(GenerationUnavailable):
        list(stream(make_generator(settings_for(fake_gemini, max_retries=1))))
    assert fake_gemini.stream_calls == 2


def test_fake_streams_as_a_process() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.fake_gemini",
            "--port",
            "0",
            "--stream-chunks",
            "3",
            "--first-chunk-delay",
            "0.2",
            "--chunk-delay",
            "0.01",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[-1]
        generator = make_generator(
            Settings(google_api_key=API_KEY, gemini_base_url=url, retry_delay=0.01)
        )
        started = time.monotonic()
        received = list(stream(generator))
        assert time.monotonic() - started >= 0.2
        assert received == split_chunks(FULL_ANSWER, 3)
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        assert process.stdout is not None
        process.stdout.close()
