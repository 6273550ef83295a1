"""Public chat function: functions-framework sends every path here; we dispatch and hand over."""

from __future__ import annotations

import flask
import functions_framework

from chatbot.chat_api import ChatApi
from chatbot.config import Settings
from chatbot.docs_api import DocsApi
from chatbot.http import Route, Router
from chatbot.logs import configure_logging
from chatbot.openapi import chat_document

# Settings are validated when the instance starts, so a bad variable stops start-up with
# its name; everything expensive (model, storage, snapshot) is built on the first request.
_settings = Settings.from_env()
configure_logging(_settings)
_api = ChatApi(_settings)
_docs = DocsApi(chat_document(_settings))

ROUTES: dict[str, dict[str, Route]] = {
    "/chat": {"POST": Route(_api.chat, "rate_limit_chat")},
    "/health": {"GET": Route(_api.health, None)},
    "/cache/stats": {"GET": Route(_api.cache_stats, "rate_limit_stats")},
    **_docs.routes("rate_limit_info"),
}
ROUTES["/"] = {"GET": Route(lambda request: _api.info(request, ROUTES), "rate_limit_info")}
_router = Router(_settings, ROUTES)


# Some requests never reach chat(): the framework answers /robots.txt, /favicon.ico and paths
# its URL rules cannot match (a %0A in the path) with its own HTML 404. Send them through the
# router too, so they get the same JSON 404, X-Request-Id and log line as any unknown path.
@functions_framework.errorhandler(404)
def not_found(error: Exception) -> flask.Response:
    """Framework-level 404s answered like every other unknown route."""
    return _router(flask.request)


@functions_framework.http
def chat(request: flask.Request) -> flask.Response:
    """Entry point of the chat Cloud Function."""
    return _router(request)
