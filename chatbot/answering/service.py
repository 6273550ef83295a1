"""The chat service: owns the order of work for one question.

    standalone question -> snapshot lease -> cache lookup -> embed -> top-k retrieve
        -> answer (whole, or streamed) -> cache store -> event

Validation and rate limits come before this, at the HTTP edge (chatbot/web/), because they
apply to every route. The answer id, timings, retries and a stream's outcome go to the
request's summary log line through ``chatbot.logs.annotate`` (a flight's followers report
their own, not their leader's timings). Only history-free questions
use the cache; a follow-up is first made standalone (chatbot/answering/conversation.py) so
retrieval finds what it refers to, and the conversation reaches the answerer as quoted data.

A streamed answer does everything that can fail with an ordinary HTTP status (no snapshot,
say) before it returns, then yields events: ``meta`` (answer id, sources) before any text,
``delta`` pieces whose concatenation is the non-streamed answer, and ``done`` or ``error``.
(Over 300 lines on purpose: the order of work in both its forms, whole and streamed, stays in
one module so the two cannot drift apart.)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from chatbot.answering.answerers import (
    DONT_KNOW,
    Answer,
    Draft,
    ExtractiveAnswerer,
    GeminiAnswerer,
    Generator,
    pieces,
)
from chatbot.answering.cache import AnswerCache, Flight, cache_key
from chatbot.answering.conversation import Condenser, Standalone, Turn
from chatbot.answering.embeddings import Embedder, make_embedder
from chatbot.answering.retrieval import KnowledgeIndex, Passage
from chatbot.bucket.events import EventLog
from chatbot.bucket.following import STORAGE_RETRY_SECONDS, BucketFollower
from chatbot.bucket.serving import LiveSnapshot, SnapshotServer
from chatbot.bucket.storage import Storage, open_storage
from chatbot.config import Settings
from chatbot.errors import (
    FRIENDLY_GENERATION_ERROR,
    ChatbotError,
    GenerationUnavailable,
    NotReady,
    SnapshotUnavailable,
)
from chatbot.logs import annotate, truncate
from chatbot.shared_state import RedisLink, SharedAnswers, SharedStateDown

__all__ = ["ChatResult", "ChatService", "Event"]
# The name the log format's example in docs/architecture.md shows ("chatbot.service - INFO -
# Processing query: ..."): operators' saved log queries match it.
logger = logging.getLogger("chatbot.service")
Event = tuple[str, dict]  # an SSE event: its name and its JSON data
FOLLOW_MARGIN_SECONDS = 5.0


@dataclass(frozen=True)
class ChatResult:
    """One answered question: its id, the answer, whether it was cached, and the snapshot."""

    answer_id: str
    answer: Answer
    cached: bool
    snapshot: str


@dataclass(frozen=True)
class _Asked:
    """What one request asked, and what is known about it before the answer."""

    answer_id: str
    message: str
    standalone: Standalone
    history: tuple[Turn, ...]
    started: float


def _encode_answer(answer: Answer) -> str:
    return json.dumps(dataclasses.asdict(answer))


def _decode_answer(raw: bytes) -> Answer:
    return Answer(**json.loads(raw))


def default_generator(settings: Settings) -> Generator:
    """Gemini when GOOGLE_API_KEY is set, else the offline extractive answerer."""
    if settings.google_api_key:
        from chatbot.answering.gemini import GeminiGenerator

        return GeminiAnswerer(GeminiGenerator(settings), settings.gemini_model)
    return ExtractiveAnswerer()


def default_condenser(settings: Settings) -> Condenser:
    """Gemini rewrites follow-ups within CONDENSE_TIMEOUT_SECONDS, no retries; else the rule."""
    if not settings.google_api_key:
        return Condenser(None)
    from chatbot.answering.gemini import GeminiGenerator

    tight = dataclasses.replace(
        settings,
        max_retries=0,
        generation_deadline_seconds=settings.condense_timeout_seconds,
        generation_timeout_seconds=settings.condense_timeout_seconds,
    )
    return Condenser(GeminiGenerator(tight))


class ChatService:
    """Everything one chat instance needs, built once and shared by all request threads."""

    def __init__(
        self,
        settings: Settings,
        *,
        storage: Storage | None = None,
        embedder: Embedder | None = None,
        generator: Generator | None = None,
        condenser: Condenser | None = None,
        events: EventLog | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        shared: RedisLink | None = None,
    ) -> None:
        """``shared``: the instance's link to REDIS_URL (the router's limits use it too)."""
        self.settings = settings
        self.shared = shared
        self.fleet = (
            SharedAnswers(shared, settings.cache_ttl, encode=_encode_answer, decode=_decode_answer)
            if shared is not None
            else None
        )
        self._epoch_seen = 0
        storage = storage or open_storage(
            settings.snapshot_uri, retry_deadline=STORAGE_RETRY_SECONDS
        )
        self.embedder = embedder or make_embedder(settings.embedding_backend, settings)
        self.cache = AnswerCache(
            settings.cache_ttl,
            settings.cache_max_entries,
            timer=clock,
            # A follower waits as long as a leader may take, and a little more.
            patience=settings.generation_deadline_seconds + FOLLOW_MARGIN_SECONDS,
            shared=self.fleet,
        )
        self.generator = generator or default_generator(settings)
        self.condenser = condenser or default_condenser(settings)
        self.snapshots = SnapshotServer(
            storage,
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
        self.events = events or EventLog(
            storage, self.follower.instance_id, flush_seconds=settings.events_flush_seconds
        )
        self.started = time.time()
        warm = getattr(self.embedder, "warm", None)
        if warm is not None:  # overlap the model's start-up with the snapshot restore
            threading.Thread(target=warm, name="embedder-warm-up", daemon=True).start()

    def _ready(self) -> None:
        """Restore LATEST on a cold start; SnapshotUnavailable (503) when that fails."""
        try:
            self.follower.ensure_ready()
        except NotReady:
            self.follower.maybe_poll()  # the heartbeat tells the admin function why
            raise

    @contextmanager
    def lease(self) -> Iterator[LiveSnapshot]:
        """The live snapshot for one request (restored first on a cold start), after the
        control check that is due (bucket/following.py), so a fleet clear reaches it."""
        self._ready()
        self.follower.maybe_poll()
        with self.snapshots.lease() as live:
            yield live

    # -- asking ---------------------------------------------------------------------------

    def _ask(self, message: str, history: Sequence[Turn]) -> _Asked:
        logger.info("Processing query: %s", truncate(message))
        started = time.perf_counter()
        answer_id = uuid.uuid4().hex
        annotate(answer_id=answer_id, cached=False, retries=0)
        self._ready()  # not ready: the 503 comes before any call to Gemini
        standalone = self.condenser.condense(message, history)
        if history:
            annotate(history=len(history), standalone=standalone.source)
        return _Asked(answer_id, message, standalone, tuple(history), started)

    def _key(self, asked: _Asked, live: LiveSnapshot) -> str | None:
        """The cache key, for a history-free question only."""
        if asked.history:
            return None
        return cache_key(asked.message, live.version, self._epoch())

    def _epoch(self) -> int:
        """The cache epoch: the highest of Redis's (read now), the bucket's and any seen before.

        The admin's clear raises both; the bucket's is read on the request path once
        CONTROL_POLL_SECONDS have passed. Never going back keeps this instance's own answers
        (served while Redis is down) from coming back after a clear, even when Redis
        restarts empty or the admin has no REDIS_URL.
        """
        fleet = 0
        if self.fleet is not None:
            try:
                fleet = self.fleet.epoch()
            except SharedStateDown:
                pass
        self._epoch_seen = max(self._epoch_seen, fleet, self.follower.epoch)
        return self._epoch_seen

    def _retrieve(self, asked: _Asked, live: LiveSnapshot) -> list[Passage]:
        """The passages relevant to the standalone question (none: the bot does not know)."""
        t0 = time.perf_counter()
        vector = self.embedder.embed([asked.standalone.text])[0]
        t1 = time.perf_counter()
        passages = live.index.query(vector, self.settings.top_k)
        annotate(embed_ms=(t1 - t0) * 1000, retrieval_ms=(time.perf_counter() - t1) * 1000)
        base_url = self.settings.source_base_url
        relevant = [
            p.with_public_url(base_url) for p in passages if p.score >= self.settings.min_relevance
        ]
        if not relevant:
            logger.info(
                "No passage above relevance %.2f: not calling the answerer",
                self.settings.min_relevance,
            )
        return relevant

    def _answer(self, asked: _Asked, live: LiveSnapshot) -> Answer:
        relevant = self._retrieve(asked, live)
        if not relevant:
            return Answer(DONT_KNOW, [], "none")
        t0 = time.perf_counter()
        try:
            return self.generator.answer(asked.message, relevant, asked.history)
        finally:
            annotate(generation_ms=(time.perf_counter() - t0) * 1000)

    def _draft(self, asked: _Asked, live: LiveSnapshot) -> Draft:
        """Retrieve now; the answer's text is written as the draft's chunks are read."""
        relevant = self._retrieve(asked, live)
        if not relevant:
            return Draft([], iter(pieces(DONT_KNOW)), "none")
        return self.generator.draft(asked.message, relevant, asked.history)

    def _record(self, asked: _Asked, answer: Answer, cached: bool, snapshot: str) -> None:
        """The answer (or dont_know) event; what insights are built from. Never raises."""
        common = {
            "answer_id": asked.answer_id,
            "question": asked.message,
            "standalone_question": asked.standalone.text,
            "cached": cached,
            "snapshot": snapshot,
            "latency_ms": round((time.perf_counter() - asked.started) * 1000, 1),
        }
        if not answer.sources:
            self.events.record("dont_know", **common)
            return
        sources = [{"source": s["source"], "score": s["score"]} for s in answer.sources]
        self.events.record(
            "answer", **common, sources=sources, generator=answer.generator, answer=answer.text
        )

    # -- answering ------------------------------------------------------------------------

    def chat(
        self, message: str, use_cache: bool = True, history: Sequence[Turn] = ()
    ) -> ChatResult:
        """Answer one validated question, whole."""
        asked = self._ask(message, history)
        with self.lease() as live:
            key = self._key(asked, live)
            if key is None:
                answer, cached = self._answer(asked, live), False
            else:
                answer, cached = self.cache.get_or_compute(
                    key, lambda: self._answer(asked, live), use_cache=use_cache
                )
        annotate(cached=cached)
        self._record(asked, answer, cached, live.version)
        return ChatResult(asked.answer_id, answer, cached, live.version)

    def stream(
        self, message: str, use_cache: bool = True, history: Sequence[Turn] = ()
    ) -> Iterator[Event]:
        """Answer one validated question as events; NotReady and the like raise right here."""
        asked = self._ask(message, history)
        annotate(stream=True)
        with self.lease() as live:
            snapshot = live.version
            key = self._key(asked, live)
            if key is None:
                return self._lead(asked, snapshot, self._draft(asked, live), None, None)
            hit, flight, leads = self.cache.begin(key, use_cache)
            if flight is None:
                return self._replay(asked, snapshot, hit)
            if not leads:
                return self._follow(asked, snapshot, key, flight)
            try:
                draft = self._draft(asked, live)
            except BaseException as exc:
                self.cache.end(key, flight, error=exc)
                raise
            flight.start(draft.sources)
            return self._lead(asked, snapshot, draft, key, flight)

    def _meta(self, asked: _Asked, snapshot: str, sources: list, cached: bool) -> Event:
        data = {"answer_id": asked.answer_id, "sources": sources, "snapshot": snapshot}
        return "meta", {**data, "cached": cached}

    def _done(self, asked: _Asked, snapshot: str, answer: Answer, cached: bool) -> Event:
        annotate(cached=cached)
        self._record(asked, answer, cached, snapshot)
        return "done", {"status": "success", "answer_id": asked.answer_id, "cached": cached}

    def _replay(self, asked: _Asked, snapshot: str, answer: Answer) -> Iterator[Event]:
        """A cached answer, at once."""
        yield self._meta(asked, snapshot, answer.sources, cached=True)
        yield "delta", {"text": answer.text}
        yield self._done(asked, snapshot, answer, cached=True)

    def _lead(
        self,
        asked: _Asked,
        snapshot: str,
        draft: Draft,
        key: str | None,
        flight: Flight | None,
    ) -> Iterator[Event]:
        """Write the answer, passing each piece to the visitor and to any followers.

        Whatever stops it early (Gemini failing, the visitor leaving, a bug) closes the draft,
        which ends the Gemini call, and fails the flight, so followers are never left waiting.
        """
        text: list[str] = []
        failure: BaseException | None = GenerationUnavailable(detail="the answer was cut short")
        t0 = time.perf_counter()
        try:
            yield self._meta(asked, snapshot, draft.sources, cached=False)
            for chunk in draft.chunks:
                text.append(chunk)
                if flight is not None:
                    flight.publish(chunk)
                yield "delta", {"text": chunk}
            failure = None
        except ChatbotError as exc:  # Gemini failed, before or after the first piece
            failure = exc
        except Exception as exc:  # a bug: the visitor still gets the error event, not a cut
            logger.exception("Writing the streamed answer crashed")
            failure = exc
        except GeneratorExit:
            annotate(outcome="client_left")
            raise
        finally:
            close = getattr(draft.chunks, "close", None)
            if close is not None:
                close()
            annotate(generation_ms=(time.perf_counter() - t0) * 1000)
            if failure is not None and flight is not None and key is not None:
                self.cache.end(key, flight, error=failure)
        if failure is not None:
            detail = getattr(failure, "detail", "") or str(failure)
            logger.warning("Streaming the answer failed: %s", detail)
            annotate(outcome="error", error=detail)
            yield "error", {"status": "error", "response": FRIENDLY_GENERATION_ERROR}
            return
        answer = Answer("".join(text), draft.sources, draft.generator)
        if flight is not None and key is not None:
            self.cache.end(key, flight, answer)
        yield self._done(asked, snapshot, answer, cached=False)

    def _follow(self, asked: _Asked, snapshot: str, key: str, flight: Flight) -> Iterator[Event]:
        """Pass on what another request is writing for the same question."""
        sent_meta = False
        try:
            for kind, value in self.cache.follow(key, flight):
                if kind == "head":
                    sent_meta = True
                    yield self._meta(asked, snapshot, value, cached=True)
                elif kind == "chunk":
                    yield "delta", {"text": value}
                else:  # done: a whole answer (its leader did not stream)
                    if not sent_meta:
                        yield self._meta(asked, snapshot, value.sources, cached=True)
                        yield "delta", {"text": value.text}
                    yield self._done(asked, snapshot, value, cached=True)
        except ChatbotError as exc:
            annotate(outcome="error", error=getattr(exc, "detail", "") or str(exc))
            yield "error", {"status": "error", "response": FRIENDLY_GENERATION_ERROR}

    # -- the other routes -----------------------------------------------------------------

    def cache_stats(self) -> dict:
        """This instance's cache statistics; also lets an idle instance catch up on the bucket."""
        self.follower.maybe_poll()
        return self.cache.stats()

    def health(self) -> tuple[int, dict]:
        """(status, body) for GET /health, which is public: ready or not, and what is served.

        No storage URI, refusal reason or storage error here: those reach the operator
        through the logs and this instance's heartbeat (the admin's GET /cache/stats).
        """
        try:
            with self.lease():
                pass
        except NotReady:
            ready, message = False, SnapshotUnavailable.PUBLIC
        else:
            ready, message = True, "Romega Chatbot is ready"
        degraded = ready and self.shared is not None and not self.shared.check()
        if degraded:
            message = "Romega Chatbot is ready; shared state (Redis) is unreachable, so rate "
            message += "limits and cache are this instance's own until it is back"
        served = self.snapshots.status()
        body = {
            "status": ("degraded" if degraded else "healthy") if ready else "unhealthy",
            "message": message,
            "cache_size": len(self.cache),
            "snapshot": {
                "version": served.get("version"),
                **{k: served[k] for k in ("documents", "chunks") if served.get(k) is not None},
            },
            "generator": self.generator.name,
        }
        if ready:
            body["uptime_seconds"] = round(time.time() - self.started, 1)
        return (200 if ready else 503), body
