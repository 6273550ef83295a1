"""Everything that talks to Gemini: answers (generateContent) and, optionally, embeddings.

There is one retry layer, here (tenacity); the SDK's own retries are switched off. A call is
retried on HTTP 408, 429 and 5xx, timeouts and dropped connections, never on another 4xx.
Waits grow as ``retry_delay * 2**n`` plus jitter, at most ``max_retries`` retries, and the
whole call, waits included, stays inside ``generation_deadline_seconds``: each attempt's
HTTP timeout shrinks to the time left, and a wait that would pass the deadline (including a
server's own retry delay on a 429) ends the call at once instead.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import tenacity

from chatbot.config import Settings
from chatbot.errors import ConfigError, GenerationRejected, GenerationUnavailable

if TYPE_CHECKING:
    import numpy as np
    from google import genai

logger = logging.getLogger(__name__)

T = TypeVar("T")

TEMPERATURE = 0.2
MAX_OUTPUT_TOKENS = 1024
EMBEDDING_MODEL = "text-embedding-004"
EMBEDDING_DIMENSION = 768
EMBEDDING_BATCH = 100  # the most texts batchEmbedContents takes in one request
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


def _status(exc: BaseException) -> str:
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


def server_retry_delay(exc: BaseException) -> float | None:
    """The wait the server asked for: google.rpc.RetryInfo ``retryDelay`` or Retry-After."""
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
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            return None  # an HTTP date; Google's front ends send seconds
    return None


@dataclasses.dataclass(frozen=True)
class Generation:
    """An answer and what it took to get it."""

    text: str
    attempts: int
    retries: int
    seconds: float


class _RetryPolicy:
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
        request Gemini refuses.
        """
        start = self.clock()
        deadline = start + self.deadline_seconds
        attempts = 0
        stop_reason = "retries exhausted"
        backoff = tenacity.wait_exponential_jitter(
            initial=self.retry_delay, max=self.deadline_seconds, jitter=self.retry_delay
        )

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            remaining = deadline - self.clock()
            return call(max(MIN_ATTEMPT_SECONDS, min(self.timeout_seconds, remaining)))

        def wait(state: tenacity.RetryCallState) -> float:
            hint = server_retry_delay(_exception(state))
            return hint if hint is not None else backoff(state)

        def stop(state: tenacity.RetryCallState) -> bool:
            nonlocal stop_reason
            if state.attempt_number > self.max_retries:
                stop_reason = "retries exhausted"
                return True
            remaining = deadline - self.clock()
            if (state.upcoming_sleep or 0.0) + MIN_ATTEMPT_SECONDS > remaining:
                hint = server_retry_delay(_exception(state))
                stop_reason = (
                    f"server asked to wait {hint:g}s, past the deadline"
                    if hint is not None
                    else "deadline reached"
                )
                return True
            return False

        def log_retry(state: tenacity.RetryCallState) -> None:
            logger.warning(
                "%s attempt %d failed with %s; retrying in %.2fs",
                self.name,
                state.attempt_number,
                _status(_exception(state)),
                state.upcoming_sleep,
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_retryable),
            wait=wait,
            stop=stop,
            sleep=self.sleep,
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            result = retrying(attempt)
        except (GenerationRejected, GenerationUnavailable):
            raise
        except Exception as exc:
            elapsed = self.clock() - start
            if is_retryable(exc):
                detail = (
                    f"{self.name} failed after {attempts} attempt(s) in {elapsed:.2f}s "
                    f"({stop_reason}); last error: {_status(exc)}"
                )
                logger.warning("%s", detail)
                hint = server_retry_delay(exc)
                retry_after = DEFAULT_RETRY_AFTER if hint is None else math.ceil(hint)
                raise GenerationUnavailable(
                    detail=detail,
                    retry_after=max(1, min(retry_after, MAX_RETRY_AFTER)),
                    retries=attempts - 1,
                ) from exc
            if _status(exc).isdigit():  # an HTTP error that retrying cannot fix
                logger.warning("Gemini refused the request with %s", _status(exc))
                raise GenerationRejected(detail=f"Gemini refused the request: {exc}") from exc
            if isinstance(exc, ValueError | _HTTP_ERRORS):  # a malformed reply, a bad URL
                logger.warning("Gemini call failed: %s", _status(exc))
                raise GenerationUnavailable(
                    detail=f"Gemini call failed: {_status(exc)}: {exc}"
                ) from exc
            raise
        return result, attempts, self.clock() - start


def _exception(state: tenacity.RetryCallState) -> BaseException:
    assert state.outcome is not None and state.outcome.failed
    exc = state.outcome.exception()
    assert exc is not None
    return exc


class _LazyClient:
    """One google-genai client per instance, built on first use (thread-safe)."""

    def __init__(self, settings: Settings) -> None:
        if not settings.google_api_key:
            raise ConfigError("GOOGLE_API_KEY must be set to use Gemini")
        self._settings = settings
        self._client: genai.Client | None = None
        self._lock = threading.Lock()

    def get(self) -> genai.Client:
        """The client, created once."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    from google import genai
                    from google.genai import types

                    self._client = genai.Client(
                        vertexai=False,
                        api_key=self._settings.google_api_key,
                        http_options=types.HttpOptions(
                            base_url=self._settings.gemini_base_url or None,
                            timeout=_milliseconds(self._settings.generation_timeout_seconds),
                            # attempts=1: no SDK retries; _RetryPolicy is the only layer.
                            retry_options=types.HttpRetryOptions(attempts=1),
                        ),
                    )
        return self._client

    def close(self) -> None:
        """Close the HTTP connections, if a client was made."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _milliseconds(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class GeminiGenerator:
    """Writes answers with a Gemini model, retried within the deadline."""

    def __init__(
        self,
        settings: Settings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = settings.gemini_model
        self._client = _LazyClient(settings)
        self._policy = _RetryPolicy(settings, sleep=sleep, clock=clock)

    def generate(self, *, system_instruction: str, prompt: str) -> Generation:
        """Answer ``prompt`` under ``system_instruction``; errors are chatbot.errors types."""
        from google.genai import types

        client = self._client.get()
        thinking = (
            types.ThinkingConfig(thinking_budget=0) if "flash" in self.model.lower() else None
        )

        def call(timeout: float) -> str:
            response = client.models.generate_content(
                model=self.model,
                contents=prompt,
                config=types.GenerateContentConfig(
                    system_instruction=system_instruction,
                    temperature=TEMPERATURE,
                    max_output_tokens=MAX_OUTPUT_TOKENS,
                    thinking_config=thinking,
                    http_options=types.HttpOptions(timeout=_milliseconds(timeout)),
                ),
            )
            text = response.text
            if not text or not text.strip():
                raise GenerationRejected(detail=_empty_reason(response))
            return text.strip()

        text, attempts, seconds = self._policy.run(call)
        return Generation(text=text, attempts=attempts, retries=attempts - 1, seconds=seconds)

    def close(self) -> None:
        """Release the HTTP client."""
        self._client.close()


def _empty_reason(response: object) -> str:
    feedback = getattr(response, "prompt_feedback", None)
    block = getattr(feedback, "block_reason", None)
    candidates = getattr(response, "candidates", None) or []
    finish = getattr(candidates[0], "finish_reason", None) if candidates else None
    return f"Gemini returned no text (block reason: {block}, finish reason: {finish})"


class GeminiEmbedder:
    """Embeds texts with a Gemini embedding model (EMBEDDING_BACKEND=gemini)."""

    def __init__(
        self,
        settings: Settings,
        *,
        model: str = EMBEDDING_MODEL,
        dimension: int = EMBEDDING_DIMENSION,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model_id = model
        self.dimension = dimension
        self._client = _LazyClient(settings)
        self._policy = _RetryPolicy(settings, sleep=sleep, clock=clock, name="Gemini embedding")

    def fingerprint(self) -> dict:
        """What the manifest records; a hosted model has no weights file, so no sha256."""
        return {
            "backend": "gemini",
            "model": self.model_id,
            "sha256": None,
            "dimension": self.dimension,
        }

    def embed(self, texts: list[str]) -> np.ndarray:
        """Return an (n, dimension) float32 array of L2-normalised embeddings."""
        import numpy as np
        from google.genai import types

        client = self._client.get()
        batches: list[np.ndarray] = [np.zeros((0, self.dimension), dtype=np.float32)]
        for start in range(0, len(texts), EMBEDDING_BATCH):
            batch = texts[start : start + EMBEDDING_BATCH]

            def call(timeout: float, batch: list[str] = batch) -> list[list[float]]:
                response = client.models.embed_content(
                    model=self.model_id,
                    contents=batch,
                    config=types.EmbedContentConfig(
                        output_dimensionality=self.dimension,
                        http_options=types.HttpOptions(timeout=_milliseconds(timeout)),
                    ),
                )
                return [list(e.values or []) for e in response.embeddings or []]

            vectors, _, _ = self._policy.run(call)
            array = np.asarray(vectors, dtype=np.float32)
            if array.shape != (len(batch), self.dimension):
                raise GenerationUnavailable(
                    detail=f"Gemini embeddings came back with shape {array.shape}, "
                    f"expected {(len(batch), self.dimension)}"
                )
            batches.append(array)
        vectors = np.concatenate(batches)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def close(self) -> None:
        """Release the HTTP client."""
        self._client.close()
