"""The chat service: owns the order of work for one question.

    validate -> cache lookup -> embed query -> top-k retrieve -> answer -> cache store

Rate limiting happens before this, in the HTTP layer, because it applies to every route.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from chatbot.answer import DONT_KNOW, Answer, ExtractiveAnswerer, GeminiAnswerer, Generator
from chatbot.cache import AnswerCache, cache_key
from chatbot.config import API_VERSION, Settings
from chatbot.embeddings import Embedder, make_embedder
from chatbot.errors import ChatbotError, ClientError, NotReady
from chatbot.live import STORAGE_RETRY_SECONDS, SnapshotManager
from chatbot.logs import truncate
from chatbot.storage import Storage, open_storage

logger = logging.getLogger(__name__)


@dataclass
class ChatResult:
    """An answer plus what the request's summary log line reports."""

    body: dict
    cached: bool
    timings: dict = field(default_factory=dict)
    retries: int = 0


def validate_chat_body(body: object, max_chars: int) -> tuple[str, bool]:
    """Check the /chat JSON body; returns (message, use_cache) or raises ClientError."""
    if not isinstance(body, dict):
        raise ClientError("Request body must be a JSON object")
    unknown = set(body) - {"message", "use_cache"}
    if unknown:
        raise ClientError(f"Unknown field(s): {', '.join(sorted(unknown))[:200]}")
    if "message" not in body:
        raise ClientError("Field 'message' is required")
    message = body["message"]
    if not isinstance(message, str):
        raise ClientError("Field 'message' must be a string")
    use_cache = body.get("use_cache", True)
    if not isinstance(use_cache, bool):
        raise ClientError("Field 'use_cache' must be a boolean")
    # Control characters other than ordinary whitespace carry no meaning in a question.
    cleaned = "".join(ch for ch in message if ch in "\t\n\r" or ch.isprintable())
    if not cleaned.strip():
        raise ClientError("Field 'message' must not be empty")
    if len(message) > max_chars:
        raise ClientError(f"Field 'message' must be at most {max_chars} characters")
    return cleaned.strip(), use_cache


class ChatService:
    """Everything one chat instance needs, built lazily once and shared by all threads."""

    def __init__(
        self,
        settings: Settings,
        *,
        storage: Storage | None = None,
        embedder: Embedder | None = None,
        generator: Generator | None = None,
        clock=time.monotonic,
    ) -> None:
        self.settings = settings
        self.embedder = embedder or make_embedder(settings.embedding_backend, settings)
        self.cache = AnswerCache(settings.cache_ttl, settings.cache_max_entries, timer=clock)
        self.generator = generator or self._default_generator(settings)
        self.snapshots = SnapshotManager(
            settings,
            storage or open_storage(settings.snapshot_uri, retry_deadline=STORAGE_RETRY_SECONDS),
            self.embedder.fingerprint,
            clock=clock,
            stats=self.cache.stats,
            on_epoch_change=lambda epoch: self.cache.clear(),
        )
        self.started = time.time()
        warm = getattr(self.embedder, "warm", None)
        if warm is not None:  # overlap the model's start-up with the snapshot restore
            threading.Thread(target=warm, name="embedder-warm-up", daemon=True).start()
        self._lock = threading.Lock()

    @staticmethod
    def _default_generator(settings: Settings) -> Generator:
        if settings.google_api_key:
            from chatbot.gemini import GeminiGenerator

            return GeminiAnswerer(GeminiGenerator(settings), settings.gemini_model)
        return ExtractiveAnswerer()

    def chat(self, message: str, use_cache: bool = True) -> ChatResult:
        """Answer one validated question."""
        timings: dict[str, float] = {}
        logger.info("Processing query: %s", truncate(message))
        with self.snapshots.lease() as live:
            key = cache_key(message, live.version, self.snapshots.epoch)
            computed: list[Answer] = []

            def compute() -> Answer:
                answer = self._answer(message, live, timings)
                computed.append(answer)
                return answer

            try:
                answer, cached = self.cache.get_or_compute(key, compute, use_cache=use_cache)
            except ChatbotError as exc:  # the summary log line still reports what happened
                exc.log_fields = {"cached": False, "retries": getattr(exc, "retries", 0)}
                exc.log_fields.update(timings)
                raise
            body = {
                "response": answer.text,
                "status": "success",
                "cached": cached,
                "sources": answer.sources,
                "snapshot": live.version,
            }
        retries = computed[0].retries if computed else 0
        return ChatResult(body=body, cached=cached, timings=timings, retries=retries)

    def _answer(self, message: str, live, timings: dict[str, float]) -> Answer:
        t0 = time.perf_counter()
        vector = self.embedder.embed([message])[0]
        t1 = time.perf_counter()
        passages = live.index.query(vector, self.settings.top_k)
        t2 = time.perf_counter()
        timings["embed_ms"] = (t1 - t0) * 1000
        timings["retrieval_ms"] = (t2 - t1) * 1000
        relevant = [p for p in passages if p.score >= self.settings.min_relevance]
        if not relevant:
            logger.info(
                "No passage above relevance %.2f: not calling the answerer",
                self.settings.min_relevance,
            )
            return Answer(DONT_KNOW, [], "none")
        try:
            return self.generator.answer(message, relevant)
        finally:
            timings["generation_ms"] = (time.perf_counter() - t2) * 1000

    def cache_stats(self) -> dict:
        """This instance's cache statistics; also lets an idle instance catch up on the bucket."""
        self.snapshots.maybe_poll()
        return self.cache.stats()

    def health(self) -> tuple[int, dict]:
        """(status, body) for GET /health: 503 with the reason while not ready."""
        try:
            with self.snapshots.lease():
                pass
        except NotReady as exc:
            return 503, {
                "status": "unhealthy",
                "message": exc.message,
                "api_version": API_VERSION,
                "cache_size": len(self.cache),
                "snapshot": self.snapshots.status(),
                "generator": self.generator.name,
            }
        return 200, {
            "status": "healthy",
            "message": "Romega Chatbot is ready",
            "api_version": API_VERSION,
            "cache_size": len(self.cache),
            "snapshot": self.snapshots.status(),
            "generator": self.generator.name,
            "uptime_seconds": round(time.time() - self.started, 1),
        }
