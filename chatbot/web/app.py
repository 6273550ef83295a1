"""App factories: the callable functions-framework serves, built from Settings.

``functions/chat/main.py`` and ``functions/admin/main.py`` only call these with
``Settings.from_env()``; tests call them with Settings of their own. Nothing expensive
happens here: the model, the storage client and the snapshot are built on first use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import flask

from chatbot.answering.service import ChatService
from chatbot.bucket.events import install_shutdown_flush
from chatbot.bucket.storage import Storage
from chatbot.config import Settings
from chatbot.lazy import Lazy
from chatbot.logs import configure_logging
from chatbot.shared_state import open_link
from chatbot.web.admin import AdminHandlers
from chatbot.web.chat import ChatHandlers
from chatbot.web.docs import DocsHandlers
from chatbot.web.openapi import admin_document, chat_document
from chatbot.web.router import Router
from chatbot.web.widget import WidgetHandlers

__all__ = ["FunctionApp", "create_admin_app", "create_chat_app"]


class FunctionApp:
    """One Cloud Function: every request functions-framework receives goes to ``router``."""

    def __init__(self, settings: Settings, router: Router) -> None:
        self.settings = settings
        self.router = router

    def __call__(self, request: flask.Request) -> flask.Response:
        """Answer one request."""
        return self.router(request)

    def not_found(self, error: Exception) -> flask.Response:
        """The framework's own 404s (/robots.txt, /favicon.ico, paths its URL rules cannot
        match) answered like every other unknown route: JSON, X-Request-Id, a log line."""
        return self.router(flask.request)


class ChatApp(FunctionApp):
    """The public chat function; ``service`` is built by the first request that needs it."""

    def __init__(self, settings: Settings, router: Router, handlers: ChatHandlers) -> None:
        super().__init__(settings, router)
        self.handlers = handlers

    @property
    def service(self) -> ChatService:
        """This instance's ChatService (built now if no request has built it yet)."""
        return self.handlers.service


def create_chat_app(
    settings: Settings, service: Callable[[], ChatService] | None = None
) -> ChatApp:
    """The public chat function; ``service`` builds the ChatService (default: from settings)."""
    configure_logging(settings)

    shared = open_link(settings)  # no connection yet: the first Redis call makes one

    def build() -> ChatService:
        built = service() if service is not None else ChatService(settings, shared=shared)
        install_shutdown_flush(built.events)  # buffered events reach the bucket at SIGTERM
        return built

    handlers = ChatHandlers(settings, Lazy(build))
    docs = DocsHandlers(chat_document(settings))
    router = Router(
        settings,
        {
            **handlers.routes(),
            **docs.routes("rate_limit_info"),
            **WidgetHandlers().routes("rate_limit_info"),
        },
        index=handlers.index,
        index_rate="rate_limit_info",
        shared=shared,
    )
    return ChatApp(settings, router, handlers)


def create_admin_app(settings: Settings, storage: Storage | None = None) -> FunctionApp:
    """The private admin function: every request behind the X-Admin-Token check.

    The token is checked before the route is looked up (without it every path and method
    answers 401: the routes do not show), failed attempts share one per-IP limit
    (RATE_LIMIT_ADMIN) across all routes, and no CORS header is ever sent: no browser page
    is meant to call this API.
    """
    configure_logging(settings)
    if not settings.admin_token:
        logging.getLogger("chatbot.admin").warning(
            "ADMIN_TOKEN is not set: the admin function refuses every request"
        )
    handlers = AdminHandlers(settings, storage=storage)
    docs = DocsHandlers(admin_document(settings))
    router = Router(
        settings,
        {**handlers.routes(), **docs.document_routes("rate_limit_admin")},
        index=handlers.index,
        index_rate="rate_limit_admin",
        guard=handlers.guarded,
        authorize=handlers.authorize,
        failed_auth_rate="rate_limit_admin",
        cors=False,
    )
    return FunctionApp(settings, router)
