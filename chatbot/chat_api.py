"""Handlers of the public chat function's routes; functions/chat/main.py maps paths to them."""

from __future__ import annotations

import threading

import flask

from chatbot.config import API_VERSION, Settings
from chatbot.http import Reply, read_json
from chatbot.service import ChatService, validate_chat_body


class ChatApi:
    """Route handlers over one lazily built ChatService."""

    def __init__(self, settings: Settings, service_factory=None) -> None:
        self.settings = settings
        self._factory = service_factory or (lambda: ChatService(settings))
        self._service: ChatService | None = None
        self._lock = threading.Lock()

    @property
    def service(self) -> ChatService:
        """Built on first use and reused: model session, storage client, cache, snapshot."""
        if self._service is None:
            with self._lock:
                if self._service is None:
                    self._service = self._factory()
        return self._service

    def chat(self, request: flask.Request) -> Reply:
        """POST /chat: a grounded answer with its sources."""
        body = read_json(request, self.settings.max_body_bytes)
        message, use_cache = validate_chat_body(body, self.settings.max_message_chars)
        result = self.service.chat(message, use_cache=use_cache)
        return Reply(
            result.body,
            log={"cached": result.cached, "retries": result.retries, **result.timings},
        )

    def health(self, request: flask.Request) -> Reply:
        """GET /health: ready (200) or not (503, with the reason)."""
        status, body = self.service.health()
        return Reply(body, status, {"Retry-After": "5"} if status == 503 else {})

    def cache_stats(self, request: flask.Request) -> Reply:
        """GET /cache/stats: this instance's cache."""
        return Reply(self.service.cache_stats())

    def info(self, request: flask.Request, routes: dict) -> Reply:
        """GET /: what this API is and how to use it."""
        listing = []
        for path, methods in routes.items():
            if path.startswith("/docs/"):
                continue  # Swagger UI's static assets are not API routes
            for method, route in methods.items():
                limit = getattr(self.settings, route.rate) if route.rate else "unlimited"
                listing.append({"method": method, "path": path, "rate_limit": limit})
        return Reply(
            {
                "name": "Romega Chatbot API",
                "version": API_VERSION,
                "description": "Answers questions about Romega Solutions from its documentation.",
                "routes": listing,
                "docs": "/docs",
                "openapi": "/openapi.json",
                "contact": "info@romega-solutions.com",
            }
        )
