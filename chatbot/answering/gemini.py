"""Everything that talks to Gemini: answers (generateContent) and, optionally, embeddings.

One google-genai client per instance, built on first use, with the SDK's own retries off:
every call goes through chatbot/answering/retry.py, the only retry layer.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from chatbot.answering.retry import RetryPolicy
from chatbot.config import Settings
from chatbot.errors import ConfigError, GenerationRejected, GenerationUnavailable
from chatbot.lazy import Lazy

if TYPE_CHECKING:
    import numpy as np
    from google import genai

__all__ = ["GeminiEmbedder", "GeminiGenerator", "Generation"]
logger = logging.getLogger(__name__)

TEMPERATURE = 0.2
MAX_OUTPUT_TOKENS = 1024
EMBEDDING_MODEL = "text-embedding-004"
EMBEDDING_DIMENSION = 768
EMBEDDING_BATCH = 100  # the most texts batchEmbedContents takes in one request


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
        _close(self._client)


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
        self._client = _client(settings)
        self._policy = RetryPolicy(settings, sleep=sleep, clock=clock, name="Gemini embedding")

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
        _close(self._client)
