"""The chat service: owns the order of work for one question.

    snapshot lease -> cache lookup -> embed query -> top-k retrieve -> answer -> cache store

Validation and rate limits come before this, at the HTTP edge (chatbot/web/), because they
apply to every route. Timings and retries go to the request's summary log line through
``chatbot.logs.annotate``, whichever thread computes the answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from chatbot.answering.answerers import (
    DONT_KNOW,
    Answer,
    ExtractiveAnswerer,
    GeminiAnswerer,
    Generator,
)
from chatbot.answering.cache import AnswerCache, cache_key
from chatbot.answering.embeddings import Embedder, make_embedder
from chatbot.answering.retrieval import KnowledgeIndex
from chatbot.bucket.following import STORAGE_RETRY_SECONDS, BucketFollower
from chatbot.bucket.serving import LiveSnapshot, SnapshotServer
from chatbot.bucket.storage import Storage, open_storage
from chatbot.config import Settings
from chatbot.errors import NotReady
from chatbot.logs import annotate, truncate

__all__ = ["ChatResult", "ChatService"]
# The name the log format's example in docs/architecture.md shows ("chatbot.service - INFO -
# Processing query: ..."): operators' saved log queries match it.
logger = logging.getLogger("chatbot.service")


@dataclass(frozen=True)
class ChatResult:
    """One answered question: the answer, whether it came from the cache, and the snapshot."""

    answer: Answer
    cached: bool
    snapshot: str


def default_generator(settings: Settings) -> Generator:
    """Gemini when GOOGLE_API_KEY is set, else the offline extractive answerer."""
    if settings.google_api_key:
        from chatbot.answering.gemini import GeminiGenerator

        return GeminiAnswerer(GeminiGenerator(settings), settings.gemini_model)
    return ExtractiveAnswerer()


class ChatService:
    """Everything one chat instance needs, built once and shared by all request threads."""

    def __init__(
        self,
        settings: Settings,
        *,
        storage: Storage | None = None,
        embedder: Embedder | None = None,
        generator: Generator | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.embedder = embedder or make_embedder(settings.embedding_backend, settings)
        self.cache = AnswerCache(settings.cache_ttl, settings.cache_max_entries, timer=clock)
        self.generator = generator or default_generator(settings)
        self.snapshots = SnapshotServer(
            storage or open_storage(settings.snapshot_uri, retry_deadline=STORAGE_RETRY_SECONDS),
            settings.snapshot_dir,
            fingerprint=self.embedder.fingerprint,
            open_index=KnowledgeIndex,
        )
        self.follower = BucketFollower(
            self.snapshots,
            poll_seconds=settings.control_poll_seconds,
            heartbeat_seconds=settings.heartbeat_seconds,
            instance_id=settings.instance_id,
            clock=clock,
            sleep=sleep,
            stats=self.cache.stats,
            on_epoch_change=lambda epoch: self.cache.clear(),
        )
        self.started = time.time()
        warm = getattr(self.embedder, "warm", None)
        if warm is not None:  # overlap the model's start-up with the snapshot restore
            threading.Thread(target=warm, name="embedder-warm-up", daemon=True).start()

    @contextmanager
    def lease(self) -> Iterator[LiveSnapshot]:
        """The live snapshot for one request (restored first on a cold start)."""
        self.follower.ensure_ready()
        with self.snapshots.lease() as live:
            yield live
        self.follower.maybe_poll()

    def chat(self, message: str, use_cache: bool = True) -> ChatResult:
        """Answer one validated question."""
        logger.info("Processing query: %s", truncate(message))
        annotate(cached=False, retries=0)
        with self.lease() as live:
            key = cache_key(message, live.version, self.follower.epoch)
            answer, cached = self.cache.get_or_compute(
                key, lambda: self._answer(message, live), use_cache=use_cache
            )
        annotate(cached=cached)
        return ChatResult(answer, cached, live.version)

    def _answer(self, message: str, live: LiveSnapshot) -> Answer:
        t0 = time.perf_counter()
        vector = self.embedder.embed([message])[0]
        t1 = time.perf_counter()
        passages = live.index.query(vector, self.settings.top_k)
        t2 = time.perf_counter()
        annotate(embed_ms=(t1 - t0) * 1000, retrieval_ms=(t2 - t1) * 1000)
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
            annotate(generation_ms=(time.perf_counter() - t2) * 1000)

    def cache_stats(self) -> dict:
        """This instance's cache statistics; also lets an idle instance catch up on the bucket."""
        self.follower.maybe_poll()
        return self.cache.stats()

    def health(self) -> tuple[int, dict]:
        """(status, body) for GET /health: 503 with the reason while not ready."""
        try:
            with self.lease():
                pass
        except NotReady as exc:
            ready, message = False, exc.message
        else:
            ready, message = True, "Romega Chatbot is ready"
        body = {
            "status": "healthy" if ready else "unhealthy",
            "message": message,
            "cache_size": len(self.cache),
            "snapshot": {"epoch": self.follower.epoch, **self.snapshots.status()},
            "generator": self.generator.name,
        }
        if ready:
            body["uptime_seconds"] = round(time.time() - self.started, 1)
        return (200 if ready else 503), body
