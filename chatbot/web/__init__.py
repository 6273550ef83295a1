"""The HTTP edge of both functions: app factories, router, rate limits, models, handlers.

    create_chat_app(settings) / create_admin_app(settings)   what functions/*/main.py serve
    router       one Router per function: routes, limits, errors as JSON, the log line
    ratelimit    per-IP moving windows and the client IP behind Google's front end
    models       pydantic models: the one source of validation and of the OpenAPI schemas
    bodies       JSON bodies read safely and validated into models, with clear 400s
    chat, admin, docs   the handlers, each exposing its own routes
    openapi      the documents: operations and descriptions around the generated schemas

See docs/architecture.md.
"""

from chatbot.web.app import ChatApp, FunctionApp, create_admin_app, create_chat_app

__all__ = ["ChatApp", "FunctionApp", "create_admin_app", "create_chat_app"]
