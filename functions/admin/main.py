"""Private admin function: functions-framework sends every path here; we dispatch and hand over."""

from __future__ import annotations

import logging

import flask
import functions_framework

from chatbot.admin_api import AdminApi
from chatbot.config import Settings
from chatbot.http import Route, Router
from chatbot.logs import configure_logging
from chatbot.openapi import admin_document

# Settings are validated when the instance starts; the bucket is opened on the first request.
_settings = Settings.from_env()
configure_logging(_settings)
if not _settings.admin_token:
    logging.getLogger("chatbot.admin").warning(
        "ADMIN_TOKEN is not set: the admin function refuses every request"
    )
_api = AdminApi(_settings, document=admin_document(_settings))
_guard = _api.guarded

ROUTES: dict[str, dict[str, Route]] = {
    "/cache/stats": {"GET": Route(_guard(_api.fleet_stats), "rate_limit_admin")},
    "/cache": {"DELETE": Route(_guard(_api.clear_cache), "rate_limit_admin_write")},
    "/snapshots": {"GET": Route(_guard(_api.snapshots), "rate_limit_admin")},
    "/snapshots/activate": {"POST": Route(_guard(_api.activate), "rate_limit_admin_write")},
    "/openapi.json": {"GET": Route(_guard(_api.openapi), "rate_limit_admin")},
}
ROUTES["/"] = {"GET": Route(_guard(lambda request: _api.info(request, ROUTES)), "rate_limit_admin")}
_router = Router(_settings, ROUTES)


@functions_framework.http
def admin(request: flask.Request) -> flask.Response:
    """Entry point of the admin Cloud Function."""
    return _router(request)


@functions_framework.errorhandler(404)
def not_found(error: Exception) -> flask.Response:
    """Framework-level 404s (/favicon.ico, /robots.txt) answered like every other route."""
    return _router(flask.request)
