"""The retry policy's pieces on a virtual clock (chatbot/answering/retry.py).

tests/test_gemini.py drives the same policy over HTTP against the fake Gemini; these pin the
arithmetic (waits, deadline, the Retry-After the visitor is told) without waiting for real.
"""

from __future__ import annotations

import logging
import sys

import httpx
import pytest
from google.genai import errors

from chatbot.answering.retry import (
    DEFAULT_RETRY_AFTER,
    MAX_RETRY_AFTER,
    MIN_ATTEMPT_SECONDS,
    RetryPolicy,
    _transport_errors,
    is_retryable,
    server_retry_delay,
    status_label,
)
from chatbot.config import Settings
from chatbot.errors import GenerationRejected, GenerationUnavailable
from chatbot.logs import request_context

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def api_error(code: int, retry_delay: str | None = None, headers=None, nested=True):
    details = []
    if retry_delay is not None:
        info = "type.googleapis.com/google.rpc.RetryInfo"
        details.append({"@type": info, "retryDelay": retry_delay})
    body = {"code": code, "message": "no", "status": "X", "details": details}
    response = httpx.Response(code, headers=headers or {}) if headers is not None else None
    cls = errors.ClientError if code < 500 else errors.ServerError
    return cls(code, {"error": body} if nested else body, response)


class VirtualTime:
    """A clock that only moves when the policy sleeps (or a call says it took time)."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def policy(time: VirtualTime, **settings) -> RetryPolicy:
    values = {"max_retries": 3, "retry_delay": 1.0, "generation_deadline_seconds": 30.0}
    values.update(settings)
    return RetryPolicy(Settings(**values), sleep=time.sleep, clock=time.clock)


def script(*outcomes, time: VirtualTime | None = None, takes: float = 0.0):
    """A call that raises or returns ``outcomes`` in turn and records the timeouts it got."""
    timeouts: list[float] = []
    queue = list(outcomes)

    def call(timeout: float):
        timeouts.append(timeout)
        if time is not None:
            time.now += takes
        outcome = queue.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return call, timeouts


# -- what the server asked for -----------------------------------------------------------------


@pytest.mark.parametrize("nested", [True, False])
def test_retry_info_in_the_error_details(nested):
    assert server_retry_delay(api_error(429, "7s", nested=nested)) == 7.0
    assert server_retry_delay(api_error(429, " 1.5s ", nested=nested)) == 1.5


@pytest.mark.parametrize("bad", ["7", "7ms", "s", "-1s", "soon"])
def test_a_malformed_retry_delay_is_no_hint(bad):
    assert server_retry_delay(api_error(429, bad)) is None


def test_other_detail_types_are_ignored():
    exc = api_error(429)
    exc.details["error"]["details"] = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "retryDelay": "9s"},
        "not a dict",
    ]
    assert server_retry_delay(exc) is None


def test_retry_info_wins_over_retry_after():
    assert server_retry_delay(api_error(429, "3s", headers={"Retry-After": "20"})) == 3.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12", 12.0),
        ("0.5", 0.5),
        ("-4", 0.0),
        ("Tue, 14 Nov 2023 22:13:50 GMT", 30.0),  # an HTTP date 30 s from now
        ("Tue, 14 Nov 2023 22:13:50 -0000", 30.0),
        ("Tue, 14 Nov 2023 22:00:00 GMT", 0.0),  # a date in the past: now
        ("tomorrow", None),
    ],
)
def test_retry_after_in_seconds_or_as_an_http_date(value, expected):
    exc = api_error(503, headers={"Retry-After": value})
    assert server_retry_delay(exc, now=lambda: NOW) == expected


def test_no_hint_at_all():
    assert server_retry_delay(api_error(503)) is None
    assert server_retry_delay(api_error(503, headers={})) is None
    assert server_retry_delay(ValueError("not an API error")) is None


@pytest.mark.parametrize(
    ("code", "retryable"),
    [(400, False), (403, False), (404, False), (408, True), (429, True), (499, False)]
    + [(500, True), (503, True), (599, True), (600, False)],
)
def test_which_statuses_are_retried(code, retryable):
    assert is_retryable(api_error(code)) is retryable


def test_transport_errors_are_retried_other_errors_not():
    request = httpx.Request("POST", "http://127.0.0.1/")
    assert is_retryable(httpx.ConnectError("refused", request=request))
    assert is_retryable(httpx.ReadTimeout("slow", request=request))
    assert is_retryable(httpx.RemoteProtocolError("dropped", request=request))
    assert not is_retryable(httpx.HTTPStatusError("x", request=request, response=None))
    assert not is_retryable(ValueError("bad json"))


def test_status_labels():
    assert status_label(api_error(429)) == "429"
    assert status_label(ValueError("x")) == "ValueError"


# -- the policy ----------------------------------------------------------------------------------


def test_waits_double_from_retry_delay_with_jitter_until_an_answer():
    time = VirtualTime()
    call, timeouts = script(api_error(503), api_error(503), api_error(503), "answer")
    with request_context("r", None) as context:
        result, attempts, seconds = policy(time).run(call)
    assert (result, attempts) == ("answer", 4)
    assert seconds == pytest.approx(sum(time.sleeps))
    assert len(time.sleeps) == 3
    for n, wait in enumerate(time.sleeps):  # 1, 2, 4 s, each plus up to 1 s of jitter
        assert 2**n <= wait <= 2**n + 1.0
    assert context.fields["retries"] == 3
    assert timeouts[0] == 20.0  # the per-attempt timeout while the deadline is far


def test_the_server_hint_replaces_the_backoff():
    time = VirtualTime()
    call, _ = script(api_error(429, "2.5s"), "answer")
    policy(time).run(call)
    assert time.sleeps == [2.5]


def test_attempts_shrink_their_timeout_to_the_time_left():
    time = VirtualTime()
    call, timeouts = script(api_error(503), "answer", time=time, takes=9.0)
    policy(time, generation_deadline_seconds=12.0, retry_delay=0.5).run(call)
    assert timeouts[0] == 12.0  # min(timeout 20, 12 left)
    assert timeouts[1] == pytest.approx(12.0 - 9.0 - time.sleeps[0])


def test_retries_exhausted_tell_the_visitor_when_to_come_back():
    time = VirtualTime()
    call, _ = script(*[api_error(503)] * 3)
    with pytest.raises(GenerationUnavailable) as caught:
        policy(time, max_retries=2, retry_delay=0.1).run(call)
    assert "after 3 attempt(s)" in caught.value.detail
    assert "retries exhausted" in caught.value.detail and "503" in caught.value.detail
    assert caught.value.retry_after == DEFAULT_RETRY_AFTER


def test_no_retries_when_max_retries_is_zero():
    time = VirtualTime()
    call, timeouts = script(api_error(500))
    with pytest.raises(GenerationUnavailable):
        policy(time, max_retries=0).run(call)
    assert len(timeouts) == 1 and time.sleeps == []


def test_a_hint_past_the_deadline_fails_at_once_with_that_hint():
    time = VirtualTime()
    call, timeouts = script(api_error(429, "45.2s"))
    with pytest.raises(GenerationUnavailable) as caught:
        policy(time).run(call)
    assert len(timeouts) == 1 and time.sleeps == []
    assert "server asked to wait 45.2s, past the deadline" in caught.value.detail
    assert caught.value.retry_after == 46  # rounded up, never sooner than asked


@pytest.mark.parametrize(("hint", "told"), [("0.2s", 1), ("999999s", MAX_RETRY_AFTER)])
def test_the_retry_after_told_to_visitors_is_clamped(hint, told):
    time = VirtualTime()
    call, _ = script(*[api_error(429, hint)] * 4, time=time, takes=10.0)
    with pytest.raises(GenerationUnavailable) as caught:
        policy(time, max_retries=3).run(call)
    assert caught.value.retry_after == told


def test_a_wait_that_would_leave_no_time_for_an_attempt_ends_the_call():
    time = VirtualTime()
    # 29.96 s pass in the first attempt; a 0 s wait leaves 0.04 s, less than an attempt needs.
    call, timeouts = script(api_error(429, "0s"), "never", time=time, takes=29.96)
    with pytest.raises(GenerationUnavailable) as caught:
        policy(time).run(call)
    assert len(timeouts) == 1
    assert "past the deadline" in caught.value.detail


def test_the_deadline_reached_without_a_hint():
    time = VirtualTime()
    call, _ = script(api_error(503), time=time, takes=29.9)
    with pytest.raises(GenerationUnavailable) as caught:
        policy(time).run(call)
    assert "deadline reached" in caught.value.detail


def test_a_refusal_is_not_retried(caplog):
    time = VirtualTime()
    call, timeouts = script(api_error(400))
    with pytest.raises(GenerationRejected) as caught, caplog.at_level(logging.WARNING):
        policy(time).run(call)
    assert len(timeouts) == 1 and "Gemini refused the request" in caught.value.detail
    assert caplog.messages == ["Gemini refused the request with 400"]


def test_a_malformed_reply_is_unavailable_not_a_crash(caplog):
    time = VirtualTime()
    call, timeouts = script(ValueError("no candidates"))
    with pytest.raises(GenerationUnavailable) as caught, caplog.at_level(logging.WARNING):
        policy(time).run(call)
    assert len(timeouts) == 1 and caplog.messages == ["Gemini call failed: ValueError"]
    assert caught.value.detail == "Gemini call failed: ValueError: no candidates"


def test_errors_that_are_already_the_chatbots_pass_through_unchanged():
    time = VirtualTime()
    own = GenerationRejected(detail="blocked by safety")
    call, _ = script(own)
    with pytest.raises(GenerationRejected) as caught:
        policy(time).run(call)
    assert caught.value is own


def test_a_programming_error_is_not_disguised():
    time = VirtualTime()
    call, _ = script(KeyError("bug"))
    with pytest.raises(KeyError):
        policy(time).run(call)


def test_each_retry_is_logged_with_its_status_and_wait(caplog):
    time = VirtualTime()
    call, _ = script(api_error(429, "1.25s"), "answer")
    with caplog.at_level(logging.WARNING, logger="chatbot.answering.retry"):
        RetryPolicy(
            Settings(max_retries=2), sleep=time.sleep, clock=time.clock, name="Embedding"
        ).run(call)
    assert caplog.messages == ["Embedding attempt 1 failed with 429; retrying in 1.25s"]


def test_the_policy_is_named_gemini_unless_told(caplog):
    time = VirtualTime()
    call, _ = script(api_error(503), "answer")
    with caplog.at_level(logging.WARNING, logger="chatbot.answering.retry"):
        RetryPolicy(Settings(retry_delay=0.5), sleep=time.sleep, clock=time.clock).run(call)
    assert caplog.messages[0].startswith("Gemini attempt 1 failed with 503; retrying in ")


def test_both_http_stacks_transport_errors_are_known():
    import httpx2

    transient, every = _transport_errors()
    for module in (httpx, httpx2):
        expected = {module.TimeoutException, module.NetworkError, module.RemoteProtocolError}
        assert expected <= set(transient), module.__name__
        assert module.HTTPError in every, module.__name__


def test_a_missing_http_stack_is_skipped(monkeypatch):
    monkeypatch.setitem(sys.modules, "httpx2", None)  # importing it now raises ImportError
    transient, every = _transport_errors()
    assert httpx.TimeoutException in transient and every == (httpx.HTTPError,)


def test_the_failure_is_logged_once_with_its_detail_and_counted(caplog):
    time = VirtualTime()
    call, _ = script(*[api_error(503)] * 3, time=time, takes=0.5)
    with (
        request_context("r", None) as context,
        caplog.at_level(logging.WARNING, logger="chatbot.answering.retry"),
        pytest.raises(GenerationUnavailable) as caught,
    ):
        policy(time, max_retries=2, retry_delay=0.25).run(call)
    assert context.fields["retries"] == 2
    assert caplog.messages[-1] == caught.value.detail
    elapsed = time.now - 100.0
    assert caught.value.detail == (
        f"Gemini failed after 3 attempt(s) in {elapsed:.2f}s (retries exhausted); last error: 503"
    )


def test_the_deadline_on_the_last_allowed_attempt_is_the_deadline_not_the_count():
    time = VirtualTime()
    call, _ = script(api_error(503), api_error(503), time=time, takes=14.6)
    with pytest.raises(GenerationUnavailable) as caught:
        policy(time, max_retries=2, retry_delay=0.5).run(call)
    assert "(deadline reached)" in caught.value.detail


def test_backoff_starts_at_retry_delay_with_jitter_of_retry_delay():
    time = VirtualTime()
    call, _ = script(*[api_error(503)] * 6, "answer")
    policy(time, max_retries=6, retry_delay=0.01).run(call)
    for n, wait in enumerate(time.sleeps):
        assert 0.01 * 2**n <= wait <= 0.01 * 2**n + 0.01


def test_a_zero_wait_with_time_left_is_retried():
    time = VirtualTime()
    call, timeouts = script(api_error(429, "0s"), "answer", time=time, takes=29.5)
    assert policy(time).run(call)[0] == "answer" and len(timeouts) == 2


def test_a_wait_plus_a_minimal_attempt_that_exactly_fits_is_taken():
    time = VirtualTime(start=0.0)
    # 29.5 s pass; the hint 0.45 s plus a 0.05 s attempt fill the 0.5 s left exactly.
    call, timeouts = script(api_error(429, "0.45s"), "answer", time=time, takes=29.5)
    assert MIN_ATTEMPT_SECONDS == 0.05 and 0.45 + MIN_ATTEMPT_SECONDS == 0.5
    policy(time).run(call)
    assert len(timeouts) == 2


def test_a_zoneless_http_date_is_read_as_gmt_whatever_the_local_zone(monkeypatch):
    import time as clock

    monkeypatch.setenv("TZ", "America/New_York")
    clock.tzset()
    try:
        exc = api_error(503, headers={"Retry-After": "Tue, 14 Nov 2023 22:13:50 -0000"})
        assert server_retry_delay(exc, now=lambda: NOW) == 30.0
    finally:
        monkeypatch.delenv("TZ")
        clock.tzset()
