"""The public chat function's routes: /chat (JSON or SSE), /feedback, /health, /cache/stats.

A streamed answer (``"stream": true``) is Server-Sent Events: each event a name and one line
of JSON, held to its model (``MetaEvent``, ``DeltaEvent``, ``DoneEvent``, ``GenerationError``).
"""

from __future__ import annotations

from collections.abc import Iterator

import flask

from chatbot.answering.answerers import CONTACT_EMAIL
from chatbot.answering.conversation import Turn
from chatbot.answering.service import ChatService, Event
from chatbot.config import API_VERSION, Settings
from chatbot.lazy import Lazy
from chatbot.logs import annotate
from chatbot.web.bodies import parse_body
from chatbot.web.models import (
    ApiInfo,
    CacheStats,
    ChatAnswer,
    ChatRequest,
    DeltaEvent,
    DoneEvent,
    FeedbackAccepted,
    FeedbackRequest,
    GenerationError,
    Health,
    MetaEvent,
)
from chatbot.web.router import Reply, Route

__all__ = ["ChatHandlers", "sse"]
EVENT_MODELS = {
    "meta": MetaEvent,
    "delta": DeltaEvent,
    "done": DoneEvent,
    "error": GenerationError,
}


def sse(events: Iterator[Event]) -> Iterator[bytes]:
    """Server-Sent Events framing: ``event: <name>`` and one ``data:`` line of JSON each.

    Closing this iterator (the visitor went away) closes ``events``, which stops generation.
    """
    try:
        for name, data in events:
            body = EVENT_MODELS[name].model_validate(data).model_dump_json()
            yield f"event: {name}\ndata: {body}\n\n".encode()
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


class ChatHandlers:
    """Route handlers over one ChatService, built on the first request that needs it."""

    def __init__(self, settings: Settings, service: Lazy[ChatService]) -> None:
        self.settings = settings
        self._service = service

    @property
    def service(self) -> ChatService:
        """Model session, storage client, cache and snapshot: built once per instance."""
        return self._service.get()

    def routes(self) -> dict[str, dict[str, Route]]:
        """This module's part of the chat function's route table."""
        return {
            "/chat": {"POST": Route(self.chat, "rate_limit_chat")},
            "/feedback": {"POST": Route(self.feedback, "rate_limit_feedback")},
            "/health": {"GET": Route(self.health, None)},
            "/cache/stats": {"GET": Route(self.cache_stats, "rate_limit_stats")},
        }

    def chat(self, request: flask.Request) -> Reply:
        """POST /chat: a grounded answer with its sources, whole or streamed."""
        body = parse_body(
            request,
            ChatRequest,
            self.settings.max_body_bytes,
            max_message_chars=self.settings.max_message_chars,
            max_history_messages=self.settings.max_history_messages,
            max_history_chars=self.settings.max_history_chars,
        )
        history = [Turn(m.role, m.content) for m in body.history]
        if body.stream:
            events = self.service.stream(body.message, use_cache=body.use_cache, history=history)
            return Reply({}, stream=sse(events), content_type="text/event-stream")
        result = self.service.chat(body.message, use_cache=body.use_cache, history=history)
        answer = ChatAnswer(
            answer_id=result.answer_id,
            response=result.answer.text,
            status="success",
            cached=result.cached,
            sources=result.answer.sources,
            snapshot=result.snapshot,
        )
        return Reply(answer.model_dump())

    def feedback(self, request: flask.Request) -> Reply:
        """POST /feedback: a visitor's rating of one answer, recorded as an event (202)."""
        body = parse_body(request, FeedbackRequest, self.settings.max_body_bytes)
        comment = {"comment": body.comment} if body.comment else {}
        self.service.events.record(
            "feedback", answer_id=body.answer_id, rating=body.rating, **comment
        )
        annotate(answer_id=body.answer_id, rating=body.rating)
        accepted = FeedbackAccepted(status="accepted", answer_id=body.answer_id)
        return Reply(accepted.model_dump(), 202)

    def health(self, request: flask.Request) -> Reply:
        """GET /health: ready (200) or not (503); the reason is in the logs and the heartbeat."""
        status, body = self.service.health()
        health = Health.model_validate({**body, "api_version": API_VERSION})
        return Reply(
            health.model_dump(exclude_unset=True),
            status,
            {"Retry-After": "5"} if status == 503 else {},
        )

    def cache_stats(self, request: flask.Request) -> Reply:
        """GET /cache/stats: this instance's cache."""
        return Reply(CacheStats.model_validate(self.service.cache_stats()).model_dump())

    @staticmethod
    def index(routes: list[dict]) -> dict:
        """The body of GET /: what this API is and how to use it."""
        return ApiInfo(
            name="Romega Chatbot API",
            version=API_VERSION,
            description="Answers questions about Romega Solutions from its documentation.",
            routes=routes,
            docs="/docs",
            openapi="/openapi.json",
            contact=CONTACT_EMAIL,
        ).model_dump()
