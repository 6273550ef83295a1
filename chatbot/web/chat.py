"""The public chat function's routes: /chat, /health, /cache/stats and what GET / says."""

from __future__ import annotations

import flask

from chatbot.answering.answerers import CONTACT_EMAIL
from chatbot.answering.service import ChatService
from chatbot.config import API_VERSION, Settings
from chatbot.lazy import Lazy
from chatbot.web.bodies import parse_body
from chatbot.web.models import ApiInfo, CacheStats, ChatAnswer, ChatRequest, Health
from chatbot.web.router import Reply, Route

__all__ = ["ChatHandlers"]


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
            "/health": {"GET": Route(self.health, None)},
            "/cache/stats": {"GET": Route(self.cache_stats, "rate_limit_stats")},
        }

    def chat(self, request: flask.Request) -> Reply:
        """POST /chat: a grounded answer with its sources."""
        body = parse_body(
            request,
            ChatRequest,
            self.settings.max_body_bytes,
            max_message_chars=self.settings.max_message_chars,
        )
        result = self.service.chat(body.message, use_cache=body.use_cache)
        answer = ChatAnswer(
            response=result.answer.text,
            status="success",
            cached=result.cached,
            sources=result.answer.sources,
            snapshot=result.snapshot,
        )
        return Reply(answer.model_dump())

    def health(self, request: flask.Request) -> Reply:
        """GET /health: ready (200) or not (503, with the reason)."""
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
