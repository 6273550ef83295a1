"""The one retry layer for Gemini calls (tenacity), built from small named policy pieces.

A call is retried on HTTP 408, 429 and 5xx, timeouts and dropped connections, never on
another 4xx. Waits grow as ``retry_delay * 2**n`` plus jitter, or follow the server's own
retry delay when it sends one; at most ``max_retries`` retries, and the whole call, waits
included, stays inside ``generation_deadline_seconds``: each attempt's HTTP timeout shrinks
to the time left, and a wait that would pass the deadline ends the call at once instead.

    stop = stop_after_attempt(max_retries + 1) | stop_before_deadline(deadline, clock)
    wait = wait_server_hint(fallback=wait_exponential_jitter(...))
"""

from __future__ import annotations

import importlib
import logging
import math
import re
import time
from collections.abc import Callable
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TypeVar

import tenacity
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from chatbot.config import Settings
from chatbot.errors import GenerationRejected, GenerationUnavailable
from chatbot.logs import annotate

__all__ = [
    "RetryPolicy",
    "is_retryable",
    "server_retry_delay",
    "stop_before_deadline",
    "wait_server_hint",
]
T = TypeVar("T")
logger = logging.getLogger(__name__)

MIN_ATTEMPT_SECONDS = 0.05  # an attempt with less time left than this is not worth starting
DEFAULT_RETRY_AFTER = 10
MAX_RETRY_AFTER = 3600


def _transport_errors() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """(transient, all) transport errors of both HTTP stacks the SDK may use.

    google-genai 3.x sends through httpx2 (a fork of httpx under another name) when it is
    installed, and through httpx otherwise; their exception classes are unrelated.
    """
    transient: list[type[Exception]] = []
    every: list[type[Exception]] = []
    for module_name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        transient += [module.TimeoutException, module.NetworkError, module.RemoteProtocolError]
        every.append(module.HTTPError)
    return tuple(transient), tuple(every)


_TRANSIENT, _HTTP_ERRORS = _transport_errors()


def status_label(exc: BaseException) -> str:
    """A short label for logs: the HTTP status, or the transport error's class name."""
    code = getattr(exc, "code", None)
    return str(code) if isinstance(code, int) else type(exc).__name__


def is_retryable(exc: BaseException) -> bool:
    """True for 408, 429, 5xx, timeouts and dropped connections."""
    from google.genai import errors as genai_errors

    if isinstance(exc, genai_errors.APIError):
        return exc.code in (408, 429) or 500 <= (exc.code or 0) <= 599
    return isinstance(exc, _TRANSIENT)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)s\s*$")


def server_retry_delay(exc: BaseException, now: Callable[[], float] = time.time) -> float | None:
    """The wait the server asked for: google.rpc.RetryInfo ``retryDelay`` or Retry-After.

    Retry-After may be seconds or an HTTP date (RFC 9110); a date in the past means now.
    """
    details = getattr(exc, "details", None)
    error = details.get("error", details) if isinstance(details, dict) else None
    for item in (error or {}).get("details", None) or []:
        if isinstance(item, dict) and str(item.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(item.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    headers = getattr(getattr(exc, "response", None), "headers", None)
    retry_after = headers.get("retry-after") if headers is not None else None
    if retry_after:
        return _retry_after_seconds(retry_after, now)
    return None


def _retry_after_seconds(value: str, now: Callable[[], float]) -> float | None:
    """Retry-After's seconds, or the seconds until its HTTP date; None when it is neither."""
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": an HTTP date is always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now())


def _exception(state: tenacity.RetryCallState) -> BaseException:
    assert state.outcome is not None and state.outcome.failed
    exc = state.outcome.exception()
    assert exc is not None
    return exc


class wait_server_hint(wait_base):  # noqa: N801 - named like tenacity's own wait rules
    """Wait as long as the server asked (RetryInfo / Retry-After), else as ``fallback`` says."""

    def __init__(self, fallback: wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        hint = server_retry_delay(_exception(retry_state))
        return hint if hint is not None else self.fallback(retry_state)


class stop_before_deadline(stop_base):  # noqa: N801 - named like tenacity's own stop rules
    """Stop when the coming wait plus a minimal attempt would end past ``deadline``."""

    def __init__(self, deadline: float, clock: Callable[[], float]) -> None:
        self.deadline = deadline
        self.clock = clock

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        remaining = self.deadline - self.clock()
        return (retry_state.upcoming_sleep or 0.0) + MIN_ATTEMPT_SECONDS > remaining


class RetryPolicy:
    """Run one Gemini call with retries inside the deadline."""

    def __init__(
        self,
        settings: Settings,
        *,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        name: str = "Gemini",
    ) -> None:
        self.name = name
        self.max_retries = settings.max_retries
        self.retry_delay = settings.retry_delay
        self.deadline_seconds = settings.generation_deadline_seconds
        self.timeout_seconds = settings.generation_timeout_seconds
        self.sleep = sleep
        self.clock = clock

    def run(self, call: Callable[[float], T]) -> tuple[T, int, float]:
        """Call ``call(timeout_seconds)`` until it succeeds; return (result, attempts, seconds).

        Raises GenerationUnavailable when retries or time run out, GenerationRejected on a
        request Gemini refuses. The retries are added to the request's summary log line.
        """
        start = self.clock()
        deadline = start + self.deadline_seconds
        attempts = 0

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            remaining = deadline - self.clock()
            return call(max(MIN_ATTEMPT_SECONDS, min(self.timeout_seconds, remaining)))

        def log_retry(state: tenacity.RetryCallState) -> None:
            logger.warning(
                "%s attempt %d failed with %s; retrying in %.2fs",
                self.name,
                state.attempt_number,
                status_label(_exception(state)),
                state.upcoming_sleep,
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_retryable),
            wait=wait_server_hint(
                tenacity.wait_exponential_jitter(
                    initial=self.retry_delay, max=self.deadline_seconds, jitter=self.retry_delay
                )
            ),
            stop=tenacity.stop_after_attempt(self.max_retries + 1)
            | stop_before_deadline(deadline, self.clock),
            sleep=self.sleep,
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            result = retrying(attempt)
        except Exception as exc:
            annotate(retries=attempts - 1)
            failure = self._failure(exc, attempts, self.clock() - start)
            if failure is exc:
                raise
            raise failure from exc
        annotate(retries=attempts - 1)
        return result, attempts, self.clock() - start

    def _failure(self, exc: Exception, attempts: int, elapsed: float) -> Exception:
        """The chatbot error a failed call ends in (``exc`` itself when it is already one)."""
        if isinstance(exc, GenerationRejected | GenerationUnavailable):
            return exc
        if is_retryable(exc):
            hint = server_retry_delay(exc)
            if attempts > self.max_retries:
                reason = "retries exhausted"
            elif hint is not None:
                reason = f"server asked to wait {hint:g}s, past the deadline"
            else:
                reason = "deadline reached"
            detail = (
                f"{self.name} failed after {attempts} attempt(s) in {elapsed:.2f}s "
                f"({reason}); last error: {status_label(exc)}"
            )
            logger.warning("%s", detail)
            retry_after = DEFAULT_RETRY_AFTER if hint is None else math.ceil(hint)
            return GenerationUnavailable(
                detail=detail, retry_after=max(1, min(retry_after, MAX_RETRY_AFTER))
            )
        if status_label(exc).isdigit():  # an HTTP error that retrying cannot fix
            logger.warning("Gemini refused the request with %s", status_label(exc))
            return GenerationRejected(detail=f"Gemini refused the request: {exc}")
        if isinstance(exc, (ValueError, *_HTTP_ERRORS)):  # a malformed reply, a bad URL
            logger.warning("Gemini call failed: %s", status_label(exc))
            return GenerationUnavailable(detail=f"Gemini call failed: {status_label(exc)}: {exc}")
        return exc
