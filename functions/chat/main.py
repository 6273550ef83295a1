"""Public chat function: functions-framework sends every path here; we dispatch and hand over."""

from __future__ import annotations

import flask
import functions_framework

from chatbot.chat_api import ChatApi
from chatbot.config import Settings
from chatbot.http import Route, Router
from chatbot.logs import configure_logging

# Settings are validated when the instance starts, so a bad variable stops start-up with
# its name; everything expensive (model, storage, snapshot) is built on the first request.
_settings = Settings.from_env()
configure_logging(_settings)
_api = ChatApi(_settings)

ROUTES: dict[str, dict[str, Route]] = {
    "/chat": {"POST": Route(_api.chat, "rate_limit_chat")},
    "/health": {"GET": Route(_api.health, None)},
    "/cache/stats": {"GET": Route(_api.cache_stats, "rate_limit_stats")},
}
ROUTES["/"] = {"GET": Route(lambda request: _api.info(request, ROUTES), "rate_limit_info")}
_router = Router(_settings, ROUTES)


@functions_framework.http
def chat(request: flask.Request) -> flask.Response:
    """Entry point of the chat Cloud Function."""
    return _router(request)
