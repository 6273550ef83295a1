"""Everything that talks to Gemini: answers (generateContent, or streamed with
streamGenerateContent) and, optionally, embeddings.

One google-genai client per instance, built on first use, with the SDK's own retries off:
every call goes through chatbot/answering/retry.py, the only retry layer. A streamed answer
is retried only until its first chunk arrives; see GeminiGenerator.stream.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from chatbot.answering.pacing import Pacer
from chatbot.answering.retry import RetryPolicy, status_label
from chatbot.config import Settings
from chatbot.errors import ConfigError, GenerationRejected, GenerationUnavailable
from chatbot.lazy import Lazy

if TYPE_CHECKING:
    import numpy as np
    from google import genai
    from google.genai import types

__all__ = ["GeminiEmbedder", "GeminiGenerator", "Generation"]
logger = logging.getLogger(__name__)

TEMPERATURE = 0.2
MAX_OUTPUT_TOKENS = 1024
EMBEDDING_MODEL = "gemini-embedding-001"  # the successor of the deprecated text-embedding-004
EMBEDDING_DIMENSION = 768
EMBEDDING_BATCH = 100  # the most texts batchEmbedContents takes in one request
# The indexer embeds thousands of chunks: it waits out quota errors (the server's retryDelay
# is up to a minute) that a visitor's question must not wait for.
INDEXING_MAX_RETRIES = 10
INDEXING_DEADLINE_SECONDS = 900.0
CHARS_PER_TOKEN = 4  # Gemini's rule of thumb, for pacing by tokens before sending


@dataclasses.dataclass(frozen=True)
class Generation:
    """An answer and what it took to get it."""

    text: str
    attempts: int
    retries: int
    seconds: float


def _client(settings: Settings) -> Lazy[genai.Client]:
    """One google-genai client per instance, built on first use."""
    if not settings.google_api_key:
        raise ConfigError("GOOGLE_API_KEY must be set to use Gemini")

    def build() -> genai.Client:
        from google import genai
        from google.genai import types

        return genai.Client(
            vertexai=False,
            api_key=settings.google_api_key,
            http_options=types.HttpOptions(
                base_url=settings.gemini_base_url or None,
                timeout=_milliseconds(settings.generation_timeout_seconds),
                # attempts=1: no SDK retries; RetryPolicy is the only layer.
                retry_options=types.HttpRetryOptions(attempts=1),
            ),
        )

    return Lazy(build)


def _close(client: Lazy[genai.Client]) -> None:
    """Close the HTTP connections, if a client was made."""
    made = client.reset()
    if made is not None:
        made.close()


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
        self._client = _client(settings)
        self._policy = RetryPolicy(settings, sleep=sleep, clock=clock)
        self._deadline_seconds = settings.generation_deadline_seconds
        self._clock = clock

    def _config(
        self,
        system_instruction: str,
        timeout: float,
        automatic_continuation: bool | None = None,
    ) -> types.GenerateContentConfig:
        """The request's GenerateContentConfig, with this attempt's HTTP timeout."""
        from google.genai import types

        thinking = (
            types.ThinkingConfig(thinking_budget=0) if "flash" in self.model.lower() else None
        )
        return types.GenerateContentConfig(
            system_instruction=system_instruction,
            temperature=TEMPERATURE,
            max_output_tokens=MAX_OUTPUT_TOKENS,
            thinking_config=thinking,
            http_options=types.HttpOptions(timeout=_milliseconds(timeout)),
            automatic_continuation=automatic_continuation,
        )

    def generate(self, *, system_instruction: str, prompt: str) -> Generation:
        """Answer ``prompt`` under ``system_instruction``; errors are chatbot.errors types."""
        client = self._client.get()

        def call(timeout: float) -> str:
            response = client.models.generate_content(
                model=self.model,
                contents=prompt,
                config=self._config(system_instruction, timeout),
            )
            text = response.text
            if not text or not text.strip():
                raise GenerationRejected(detail=_empty_reason(response))
            return text.strip()

        text, attempts, seconds = self._policy.run(call)
        return Generation(text=text, attempts=attempts, retries=attempts - 1, seconds=seconds)

    def stream(self, *, system_instruction: str, prompt: str) -> Iterator[str]:
        """Answer ``prompt`` as it is written: an iterator of non-empty text chunks.

        Lazy: nothing is sent before the first ``next()``, which opens the stream and reads
        its first chunk under the retry policy, exactly as ``generate`` is retried (same
        waits, attempts, deadline, errors and ``retries`` log field); a stream with no text
        at all is GenerationRejected. Once a chunk has been yielded nothing is retried: any
        failure ends the iteration with GenerationUnavailable. The whole stream stays inside
        GENERATION_DEADLINE_SECONDS, checked as each chunk arrives; a stalled stream is cut
        by the HTTP read timeout (GENERATION_TIMEOUT_SECONDS, or the time left when it was
        opened, if less), so it can end past the deadline by at most that. Closing the
        iterator early (``close()``, a visitor who left) closes the HTTP response at once.
        """
        client = self._client.get()
        deadline = self._clock() + self._deadline_seconds  # as RetryPolicy.run counts it
        responses: Iterator[types.GenerateContentResponse] | None = None

        def open_stream(timeout: float) -> tuple[Iterator[types.GenerateContentResponse], str]:
            """One attempt: open the stream and read up to its first chunk with text."""
            chunks = client.models.generate_content_stream(
                model=self.model,
                contents=prompt,
                # No automatic continuation: on a stream cut short after a continuation token,
                # the SDK would reconnect by itself, a second, hidden retry layer.
                config=self._config(system_instruction, timeout, automatic_continuation=False),
            )
            last = None
            try:
                for last in chunks:
                    text = (last.text or "").lstrip()
                    if text:
                        return chunks, text
            except BaseException:
                _close_stream(chunks)
                raise
            raise GenerationRejected(detail=_empty_reason(last))

        try:
            responses, first = self._policy.run(open_stream)[0]
            yield first
            count = 1
            while True:
                try:
                    response = next(responses)
                    text = response.text or ""
                except StopIteration:
                    return
                except Exception as exc:
                    detail = (
                        f"Gemini stream failed after {count} chunk(s): {status_label(exc)}: {exc}"
                    )
                    logger.warning("%s", detail)
                    raise GenerationUnavailable(detail=detail) from exc
                if self._clock() >= deadline:
                    detail = (
                        f"Gemini stream passed the deadline of {self._deadline_seconds:g}s "
                        f"after {count} chunk(s)"
                    )
                    logger.warning("%s", detail)
                    raise GenerationUnavailable(detail=detail)
                if text:
                    count += 1
                    yield text
        finally:
            if responses is not None:
                _close_stream(responses)

    def close(self) -> None:
        """Release the HTTP client."""
        _close(self._client)


def _close_stream(chunks: Iterator[object]) -> None:
    """Close an SDK stream: its generators unwind and httpx closes the response.

    The SDK's sync stream has no ``close`` of its own and nothing in its generator chain
    closes the response in a ``finally``, except httpx's ``iter_raw``; closing the outer
    generator finalises the inner ones (CPython frees them at once), which reaches it.
    """
    close = getattr(chunks, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # a failure to close must not hide the stream's own outcome
            logger.debug("closing a Gemini stream failed", exc_info=True)


def _empty_reason(response: object) -> str:
    feedback = getattr(response, "prompt_feedback", None)
    block = getattr(feedback, "block_reason", None)
    candidates = getattr(response, "candidates", None) or []
    finish = getattr(candidates[0], "finish_reason", None) if candidates else None
    return f"Gemini returned no text (block reason: {block}, finish reason: {finish})"


class GeminiEmbedder:
    """Embeds texts with a Gemini embedding model (EMBEDDING_BACKEND=gemini).

    Texts go EMBEDDING_BATCH to a request (batchEmbedContents), each request through the
    retry policy; ``for_indexing`` adds pacing and a patient policy for whole builds.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        model: str = EMBEDDING_MODEL,
        dimension: int = EMBEDDING_DIMENSION,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        pacer: Pacer | None = None,
    ) -> None:
        self.model_id = model
        self.dimension = dimension
        self._client = _client(settings)
        self._policy = RetryPolicy(settings, sleep=sleep, clock=clock, name="Gemini embedding")
        self._pacer = pacer
        self.requests = 0  # batch requests that succeeded

    @classmethod
    def for_indexing(cls, settings: Settings, **kwargs: object) -> GeminiEmbedder:
        """The indexer's embedder: paced by EMBEDDING_REQUEST_RATE / EMBEDDING_TOKEN_RATE,
        and retrying quota errors for up to INDEXING_MAX_RETRIES waits per request."""
        patient = dataclasses.replace(
            settings,
            max_retries=max(settings.max_retries, INDEXING_MAX_RETRIES),
            generation_deadline_seconds=max(
                settings.generation_deadline_seconds, INDEXING_DEADLINE_SECONDS
            ),
        )
        pacer = Pacer(settings.embedding_request_rate, settings.embedding_token_rate)
        return cls(patient, pacer=pacer, **kwargs)  # type: ignore[arg-type]

    def fingerprint(self) -> dict:
        """What the manifest records; a hosted model has no weights file, so no sha256."""
        return {
            "backend": "gemini",
            "model": self.model_id,
            "sha256": None,
            "dimension": self.dimension,
        }

    def embed(self, texts: list[str]) -> np.ndarray:
        """Return an (n, dimension) float32 array of L2-normalised embeddings.

        A reply with another number of vectors, another dimension or a non-finite value is
        GenerationUnavailable: nothing half-embedded reaches a snapshot.
        """
        import numpy as np

        batches: list[np.ndarray] = [np.zeros((0, self.dimension), dtype=np.float32)]
        for start in range(0, len(texts), EMBEDDING_BATCH):
            batches.append(self._embed_batch(texts[start : start + EMBEDDING_BATCH]))
        vectors = np.concatenate(batches)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    def _embed_batch(self, batch: list[str]) -> np.ndarray:
        """One batchEmbedContents request (paced, retried), its reply checked for shape."""
        import numpy as np
        from google.genai import types

        client = self._client.get()

        def call(timeout: float) -> list[list[float]]:
            if self._pacer is not None:
                self._pacer.wait(sum(len(t) for t in batch) // CHARS_PER_TOKEN + len(batch))
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
        self.requests += 1
        expected = (len(batch), self.dimension)
        shapes = {len(v) for v in vectors}
        if len(vectors) != len(batch) or shapes != {self.dimension}:
            raise GenerationUnavailable(
                detail=f"Gemini embeddings came back as {len(vectors)} vectors of "
                f"{sorted(shapes)} dimensions, expected {expected[0]} of {expected[1]}"
            )
        array = np.asarray(vectors, dtype=np.float32)
        if not np.isfinite(array).all():
            raise GenerationUnavailable(detail="Gemini embeddings hold non-finite values")
        return array

    def close(self) -> None:
        """Release the HTTP client."""
        _close(self._client)
