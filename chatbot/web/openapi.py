"""The OpenAPI 3.1 documents of both functions: operations, status codes, headers, examples.

Every schema is generated from chatbot/web/models.py, the classes that validate requests and
build responses. Limits and sizes come from ``Settings``, so ``GET /openapi.json`` describes
the instance serving it; tests hold every response to it and Schemathesis fuzzes against it.
(Over 300 lines because it spells out two documents' operations; nothing here is a schema.)
"""

from __future__ import annotations

import json
import re

from limits import parse_many
from pydantic.json_schema import models_json_schema

from chatbot.answering.answerers import CONTACT_EMAIL
from chatbot.config import API_VERSION, Settings
from chatbot.errors import FRIENDLY_GENERATION_ERROR
from chatbot.web import models
from chatbot.web.bodies import BODY_DEADLINE_SECONDS
from chatbot.web.docs import DOCS_ASSETS
from chatbot.web.widget import WIDGET_PATH

__all__ = ["admin_document", "chat_document", "limit_text"]
JSON = "application/json"
EXAMPLE_VERSION = "20260104T103015Z-3f2a9c1d7e"
EXAMPLE_ANSWER_ID = "5c95cfe5fdd84586a729fa277e8115ce"
SSE = "text/event-stream"
SSE_DESCRIPTION = (
    "One `event:` line and one `data:` line of JSON per event: `meta` first (answer id, "
    "sources), then `delta` pieces whose concatenation is the answer, then `done`, or `error` "
    "with the friendly message when generation fails after the stream began (nothing is "
    "cached then)."
)
RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


def schemas(*parts: dict) -> dict:
    """The JSON Schemas of every model ``parts`` refer to (and those they use), by name."""
    names = sorted(set(re.findall(r'"#/components/schemas/(\w+)"', json.dumps(parts))))
    classes = [getattr(models, name) for name in names]
    _, top = models_json_schema(
        [
            (c, "validation" if issubclass(c, models.RequestBody) else "serialization")
            for c in classes
        ],
        ref_template="#/components/schemas/{model}",
    )
    return top["$defs"]


def limit_text(rate: str) -> str:
    """'20/minute' -> '20 per 1 minute', as the 429 body spells it ('; ' between several)."""
    return "; ".join(str(item) for item in parse_many(rate))


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _shared(name: str) -> dict:
    return {"$ref": f"#/components/responses/{name}"}


def _headers(*names: str) -> dict:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


def _json(description: str, schema: dict, *headers: str, **examples: object) -> dict:
    """A JSON response; ``example=`` or ``examples=`` as OpenAPI spells them."""
    return {
        "description": description,
        "headers": _headers("X-Request-Id", *headers),
        "content": {JSON: {"schema": schema, **examples}},
    }


def _error(description: str, example: str, *headers: str) -> dict:
    return _json(
        description, _ref("Error"), *headers, example={"error": example, "status": "error"}
    )


# name: (description, schema); every one is required where a response lists it.
_HEADERS = {
    "X-Request-Id": (
        "Identifies this request in the logs; echoes a well-formed X-Request-Id sent by the "
        "client, else a new one.",
        {"type": "string", "pattern": "^[A-Za-z0-9-]{1,64}$"},
    ),
    "X-RateLimit-Limit": (
        "Requests allowed per window for this client IP on this route.",
        {"type": "integer", "minimum": 1},
    ),
    "X-RateLimit-Remaining": (
        "Requests left in the current window.",
        {"type": "integer", "minimum": 0},
    ),
    "X-RateLimit-Reset": (
        "When the window frees a request, as Unix time in seconds.",
        {"type": "integer", "minimum": 0},
    ),
    "Retry-After": ("Seconds to wait before trying again.", {"type": "integer", "minimum": 1}),
    "Allow": ("The methods this path accepts.", {"type": "string", "examples": ["OPTIONS, POST"]}),
}


def _components(paths: dict, **responses: dict) -> dict:
    """The shared headers and responses, and the schema of every model the document uses."""
    responses = {
        "NotFound": _error(
            "No such route (any path not in this document).",
            "No route /nope; see GET / for the API",
        ),
        "MethodNotAllowed": _error(
            "The path exists but not with this method; `Allow` lists the methods it takes.",
            "Method GET not allowed; use OPTIONS, POST",
            "Allow",
        ),
        "Preflight": {
            "description": "CORS preflight: the methods and headers this path accepts. "
            "`Access-Control-Allow-Origin` is added when the Origin is allowed "
            "(ALLOWED_ORIGINS).",
            "headers": {
                **_headers("X-Request-Id", "Allow"),
                "Access-Control-Allow-Methods": {"schema": {"type": "string"}},
                "Access-Control-Allow-Headers": {"schema": {"type": "string"}},
                "Access-Control-Max-Age": {"schema": {"type": "integer"}},
            },
        },
        **responses,
    }
    return {
        "schemas": schemas(paths, responses),
        "headers": {
            name: {"description": text, "required": True, "schema": schema}
            for name, (text, schema) in _HEADERS.items()
        },
        "responses": responses,
    }


def _operation(
    op_id: str,
    tag: str,
    summary: str,
    description: str,
    responses: dict,
    rate: str | None = None,
    **extra: object,
) -> dict:
    """One operation; a rate-limited one (``rate`` = e.g. '20/minute') also gets its 429,
    the limit in its description and the X-RateLimit-* headers on each of its responses."""
    if rate is not None:
        description = f"{description} Limit: {limit_text(rate)}.".strip()
        for response in responses.values():
            if "headers" in response:  # inline, not a shared $ref
                response["headers"].update(_headers(*RATE_HEADERS))
        responses["429"] = _json(
            "Too many requests from this client IP on this route.",
            _ref("RateLimitError"),
            "Retry-After",
            *RATE_HEADERS,
            # The body names the one limit that was hit; with several, the first is shown.
            example={"error": f"Rate limit exceeded: {parse_many(rate)[0]}"},
        )
    return {
        "operationId": op_id,
        "tags": [tag],
        "summary": summary,
        "description": description,
        **extra,
        "responses": responses,
    }


def _request_body(schema: str, **examples: object) -> dict:
    return {"required": True, "content": {JSON: {"schema": _ref(schema), **examples}}}


def _body_responses(settings: Settings) -> dict:
    """The shared 413 and 408: the body is dealt with before the route and its limit, so
    these carry no X-RateLimit-* headers (nothing was counted)."""
    return {
        "TooLarge": _error(
            f"The body is larger than MAX_BODY_BYTES ({settings.max_body_bytes} bytes): "
            "refused by its Content-Length without reading it, or once a chunked body passes "
            "the limit.",
            f"Request body is larger than {settings.max_body_bytes} bytes",
        ),
        "BodyTimeout": _error(
            f"The body did not arrive within {BODY_DEADLINE_SECONDS:g} s.",
            f"Request body did not arrive within {BODY_DEADLINE_SECONDS:g} s",
        ),
    }


def _body_rules(settings: Settings) -> str:
    """What every route of both functions does with a request body, before anything else."""
    return (
        f"On every route, before the route is looked up or its limit counted, a body larger "
        f"than MAX_BODY_BYTES ({settings.max_body_bytes} bytes) is refused with 413 (by its "
        "Content-Length, unread), malformed chunked framing or a body shorter than its "
        f"Content-Length with 400, and a body not in within {BODY_DEADLINE_SECONDS:g} s with "
        "408; these carry no X-RateLimit-* headers."
    )


# -- chat function --------------------------------------------------------------------------


def _chat_paths(settings: Settings) -> dict:
    info = settings.rate_limit_info
    generation_error = {"response": FRIENDLY_GENERATION_ERROR, "status": "error"}
    answer = {
        "response": "Romega Solutions offers four practices: Cloud Migration and "
        "Modernisation, Data and AI, Custom Software Engineering, and Managed Services [1].",
        "status": "success",
        "cached": False,
        "sources": [{"title": "Our Services", "source": "services.md", "score": 0.7312}],
        "snapshot": EXAMPLE_VERSION,
        "answer_id": EXAMPLE_ANSWER_ID,
    }
    health = {
        "status": "healthy",
        "message": "Romega Chatbot is ready",
        "api_version": API_VERSION,
        "cache_size": 3,
        "snapshot": {"version": EXAMPLE_VERSION, "documents": 14, "chunks": 120},
        "generator": "gemini:gemini-2.5-flash",
        "uptime_seconds": 812.4,
    }
    chat = _operation(
        "chat",
        "chat",
        "Ask a question",
        "A grounded answer from Romega Solutions' documentation, with its sources, per client "
        f"IP. The JSON body may be at most {settings.max_body_bytes} bytes and the message at "
        f"most {settings.max_message_chars} characters.",
        {
            "200": {
                **_json("The answer.", _ref("ChatAnswer"), example=answer),
                "description": 'The answer: JSON, or with `"stream": true` Server-Sent Events.',
            },
            "400": _error(
                "The body is not a JSON object with a valid `message`.",
                "Field 'message' is required",
            ),
            "408": _shared("BodyTimeout"),
            "413": _shared("TooLarge"),
            "415": _error(
                "The Content-Type is not application/json.",
                "Content-Type must be application/json, got text/plain",
            ),
            "502": _json(
                "Gemini refused to answer this question.",
                _ref("GenerationError"),
                example=generation_error,
            ),
            "503": _json(
                "No knowledge snapshot is being served yet, or Gemini stayed unavailable past "
                "the retries. A streamed answer reports Gemini failures as an `error` event "
                "instead (the stream has begun by then).",
                {"oneOf": [_ref("Error"), _ref("GenerationError")]},
                "Retry-After",
                examples={
                    "not_ready": {
                        "value": {
                            "error": "Service not ready: no snapshot can be served yet",
                            "status": "error",
                        }
                    },
                    "generation": {"value": generation_error},
                },
            ),
        },
        settings.rate_limit_chat,
        requestBody=_request_body(
            "ChatRequest",
            examples={
                "services": {"value": {"message": models.EXAMPLE_QUESTION}},
                "stream": {
                    "summary": "Stream the answer (text/event-stream)",
                    "value": {"message": models.EXAMPLE_QUESTION, "stream": True},
                },
                "follow_up": {
                    "summary": "A follow-up, with the conversation so far",
                    "value": {
                        "message": "How much does it cost?",
                        "history": [
                            {"role": "user", "content": "What does cloud migration include?"},
                            {"role": "assistant", "content": "Assessment, planning, ... [1]"},
                        ],
                    },
                },
                "fresh": {
                    "summary": "Skip the cache",
                    "value": {
                        "message": "How much does a senior consultant cost?",
                        "use_cache": False,
                    },
                },
            },
        ),
    )
    preflight = {
        "summary": "CORS preflight",
        "tags": ["chat"],
        "responses": {"204": _shared("Preflight")},
    }
    text = {"schema": {"type": "string"}}
    asset = {
        "name": "asset",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": list(DOCS_ASSETS)},
    }
    events = {"meta": "MetaEvent", "delta": "DeltaEvent", "done": "DoneEvent"}
    events["error"] = "GenerationError"
    chat["responses"]["200"]["content"][SSE] = {
        # Each event as SSE parsers see it; its data is JSON of the schema in contentSchema.
        "schema": {
            "type": "object",
            "description": SSE_DESCRIPTION,
            "required": ["event", "data"],
            "properties": {
                "event": {"enum": list(events)},
                "data": {"type": "string", "contentMediaType": JSON},
            },
            "oneOf": [
                {
                    "properties": {
                        "event": {"const": name},
                        "data": {"contentSchema": _ref(model)},
                    }
                }
                for name, model in events.items()
            ],
        }
    }
    feedback = _operation(
        "feedback",
        "chat",
        "Rate an answer",
        "Records a visitor's thumbs up or down (and an optional comment) on one answer, by its "
        "`answer_id`; the maintainer reads them in the insights report.",
        {
            "202": _json(
                "Recorded.",
                _ref("FeedbackAccepted"),
                example={"status": "accepted", "answer_id": EXAMPLE_ANSWER_ID},
            ),
            "400": _error(
                "The body is not a valid rating.", "Field 'rating' must be 'up' or 'down'"
            ),
            "408": _shared("BodyTimeout"),
            "413": _shared("TooLarge"),
            "415": _error(
                "The Content-Type is not application/json.",
                "Content-Type must be application/json, got text/plain",
            ),
        },
        settings.rate_limit_feedback,
        requestBody=_request_body(
            "FeedbackRequest",
            example={"answer_id": EXAMPLE_ANSWER_ID, "rating": "down", "comment": "Outdated."},
        ),
    )
    return {
        "/chat": {"post": chat, "options": preflight},
        "/feedback": {"post": feedback, "options": preflight},
        "/": {
            "get": _operation(
                "apiInfo",
                "info",
                "What this API is",
                "Routes with their limits, and where the docs are.",
                {"200": _json("API info.", _ref("ApiInfo"))},
                info,
            )
        },
        "/health": {
            "get": _operation(
                "health",
                "info",
                "Readiness",
                "200 when a verified snapshot is served, 503 otherwise. Public, so it says "
                "only whether and what: why an instance is not ready, or refused a snapshot, "
                "is in its logs and its heartbeat (the admin function's GET /cache/stats). "
                "Not rate limited.",
                {
                    "200": _json("Ready.", _ref("Health"), example=health),
                    "503": _json(
                        "Not ready: no snapshot can be served yet.",
                        _ref("Health"),
                        "Retry-After",
                        example={
                            "status": "unhealthy",
                            "message": "Service not ready: no snapshot can be served yet",
                            "api_version": API_VERSION,
                            "cache_size": 0,
                            "snapshot": {"version": None},
                            "generator": "gemini:gemini-2.5-flash",
                        },
                    ),
                },
            )
        },
        "/cache/stats": {
            "get": _operation(
                "cacheStats",
                "info",
                "This instance's answer cache",
                "",
                {"200": _json("Cache counters.", _ref("CacheStats"))},
                settings.rate_limit_stats,
            )
        },
        "/openapi.json": {
            "get": _operation(
                "openapi",
                "docs",
                "This document",
                "",
                {"200": _json("The OpenAPI 3.1 document.", {"type": "object"})},
                info,
            )
        },
        "/docs": {
            "get": _operation(
                "docs",
                "docs",
                "Swagger UI",
                "Interactive documentation; every asset is served by this function (no CDN).",
                {
                    "200": {
                        "description": "The Swagger UI page.",
                        "headers": _headers("X-Request-Id"),
                        "content": {"text/html": text},
                    }
                },
                info,
            )
        },
        WIDGET_PATH: {
            "get": _operation(
                "widget",
                "widget",
                "The website widget",
                "One script tag adds the chat to a site (README, 'The website widget'). "
                "Revalidate with If-None-Match: the ETag is a hash of the file.",
                {
                    "200": {
                        "description": "The script.",
                        "headers": _headers("X-Request-Id"),
                        "content": {"text/javascript": text},
                    },
                    "304": {
                        "description": "The browser's copy (its If-None-Match) is current.",
                        "headers": _headers("X-Request-Id"),
                    },
                },
                info,
            )
        },
        "/docs/{asset}": {
            "get": _operation(
                "docsAsset",
                "docs",
                "A Swagger UI asset",
                "Only the files the page needs, each limited on its own.",
                {
                    "200": {
                        "description": "The file.",
                        "headers": _headers("X-Request-Id"),
                        "content": {
                            "text/css": text,
                            "text/javascript": text,
                            "image/png": {"schema": {"contentMediaType": "image/png"}},
                        },
                    },
                    "404": _shared("NotFound"),
                },
                info,
                parameters=[asset],
            )
        },
    }


def chat_document(settings: Settings) -> dict:
    """The OpenAPI 3.1 document of the public chat function."""
    paths = _chat_paths(settings)
    components = _components(paths, **_body_responses(settings))
    # The one limit pydantic cannot know: it comes from MAX_MESSAGE_CHARS.
    message = components["schemas"]["ChatRequest"]["properties"]["message"]
    message["maxLength"] = settings.max_message_chars
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Romega Chatbot API",
            "version": API_VERSION,
            "description": "Answers questions about Romega Solutions from its own documentation. "
            "Limits are per client IP and per route (moving window). Every error is JSON with a "
            'clear message: `{"error": ..., "status": "error"}`; any other path answers 404 and '
            f"any other method 405, both with that body. {_body_rules(settings)}",
            "contact": {"email": CONTACT_EMAIL},
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "chat", "description": "Questions and answers."},
            {"name": "info", "description": "Status of this instance."},
            {"name": "docs", "description": "This documentation."},
            {"name": "widget", "description": "The website widget."},
        ],
        "paths": paths,
        "components": components,
    }


# -- admin function -------------------------------------------------------------------------


def _admin(op_id: str, summary: str, description: str, rate: str, ok: dict, **errors: dict) -> dict:
    """An admin operation: every one is behind the token and may find the bucket unreachable."""
    responses = {
        "200": ok,
        "401": _shared("Unauthorized"),
        **errors,
        "503": _shared("StoreUnreachable"),
    }
    return _operation(op_id, "admin", summary, description, responses, rate)


def _insights(rate: str) -> dict:
    """GET /insights: the report as JSON, or as a self-contained HTML page."""
    operation = _admin(
        "insights",
        "What visitors asked and the bot could not answer",
        "The insights report of the last `days` UTC days (docs/insights.md): unanswered "
        "questions grouped by meaning with their nearest document, answers rated down with "
        "their comments, answer and cache hit rates per day, documents cited most and never. "
        "JSON unless `format=html` or the Accept header prefers text/html.",
        rate,
        {
            "description": "The report.",
            "headers": _headers("X-Request-Id"),
            "content": {
                "application/json": {"schema": _ref("InsightsReport")},
                "text/html": {"schema": {"type": "string"}},
            },
        },
        **{
            "400": _error(
                "`days` is not a whole number from 1 to 90, or `format` is neither json nor html.",
                "Query parameter 'days' must be a whole number from 1 to 90, got '0'",
            ),
            "422": _error(
                "The period holds more events than one request reads (256 MB, 30 s of "
                "queries); use fewer days, the command line or BigQuery.",
                "The period's events hold 300 MB, more than the 268 MB one report reads here: ...",
            ),
        },
    )
    operation["parameters"] = [
        {
            "name": "days",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 90, "default": 7},
        },
        {
            "name": "format",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": ["json", "html"]},
        },
    ]
    return operation


def admin_document(settings: Settings) -> dict:
    """The OpenAPI 3.1 document of the private admin function (served behind the token)."""
    read, write = settings.rate_limit_admin, settings.rate_limit_admin_write
    within = f"{settings.control_poll_seconds:g}"
    activate = _admin(
        "activateSnapshot",
        "Roll back (or forward) to a published snapshot",
        f"Points LATEST at `version` once its archive checks out; chat instances switch within "
        f"{within} s of their next request.",
        write,
        _json("LATEST now points at the version.", _ref("Activated")),
        **{
            "400": _error(
                'The body is not {"version": <snapshot name>}.', "Field 'version' is required"
            ),
            "408": _shared("BodyTimeout"),
            "404": _error(
                "No such published version.",
                f"Snapshot {EXAMPLE_VERSION} is not published (see GET /snapshots)",
            ),
            "409": _error(
                "The snapshot fails its checks, or another writer changed the bucket meanwhile.",
                f"Snapshot {EXAMPLE_VERSION} cannot be activated: ...",
            ),
            "413": _shared("TooLarge"),
            "415": _error(
                "The Content-Type is not application/json.",
                "Content-Type must be application/json, got text/plain",
            ),
        },
    )
    activate["requestBody"] = _request_body("ActivateRequest", example={"version": EXAMPLE_VERSION})
    paths = {
        "/": {
            "get": _admin(
                "adminInfo",
                "What this API is",
                "Routes with their limits.",
                read,
                _json("API info.", _ref("AdminInfo")),
            )
        },
        "/openapi.json": {
            "get": _admin(
                "adminOpenapi",
                "This document",
                "",
                read,
                _json("The OpenAPI 3.1 document.", {"type": "object"}),
            )
        },
        "/cache/stats": {
            "get": _admin(
                "fleetCacheStats",
                "Fleet cache stats",
                "What every live chat instance last reported.",
                read,
                _json("Fleet view.", _ref("FleetStats")),
            )
        },
        "/cache": {
            "delete": _admin(
                "clearCache",
                "Clear the cache on every instance",
                "Bumps the cache epoch in the bucket, and in Redis when REDIS_URL is set. "
                "Chat instances sharing Redis serve fresh answers from their next request; "
                "one without Redis from its first request once CONTROL_POLL_SECONDS "
                f"({within} s) have passed since its last check (it reads the epoch before "
                "serving that request).",
                write,
                _json("Cleared.", _ref("CacheCleared")),
            )
        },
        "/snapshots": {
            "get": _admin(
                "listSnapshots",
                "Published snapshots",
                "Every published version with its manifest, and which one is LATEST.",
                read,
                _json("Versions and LATEST.", _ref("SnapshotList")),
            )
        },
        "/snapshots/activate": {"post": activate},
        "/insights": {"get": _insights(read)},
    }
    components = _components(
        paths,
        **_body_responses(settings),
        # Without a valid token nothing about the routes shows: 404, 405 and OPTIONS need one.
        NotFound=_error(
            "No such route (any path not in this document), with a valid X-Admin-Token; "
            "without one every path answers 401.",
            "No route /nope; see GET / for the API",
        ),
        MethodNotAllowed=_error(
            "The path exists but not with this method (`Allow` lists the methods it takes), "
            "with a valid X-Admin-Token; without one every method answers 401.",
            "Method GET not allowed; use DELETE, OPTIONS",
            "Allow",
        ),
        Preflight={
            "description": "The methods this path accepts, with a valid X-Admin-Token "
            "(without one, 401). No CORS headers: the admin API is not for browsers.",
            "headers": _headers("X-Request-Id", "Allow"),
        },
        Unauthorized=_error(
            "X-Admin-Token is missing or wrong, or no ADMIN_TOKEN is configured (fail closed). "
            "Checked before the route is looked up: any path and method answers this without "
            "a valid token. Failed attempts from one client IP share one limit across all "
            "routes (RATE_LIMIT_ADMIN); past it every request from that IP answers 429 until "
            "the window frees, before its token is compared.",
            "Missing or invalid X-Admin-Token",
        ),
        StoreUnreachable=_error(
            "The snapshot bucket could not be reached; retry.",
            "Service not ready: the snapshot store is unreachable: ...",
            "Retry-After",
        ),
    )
    components["securitySchemes"] = {
        "AdminToken": {
            "type": "apiKey",
            "in": "header",
            "name": "X-Admin-Token",
            "description": "Compared in constant time with ADMIN_TOKEN.",
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Romega Chatbot admin API",
            "version": API_VERSION,
            "description": "Fleet-wide cache control and snapshot rollback. Private: every "
            "request needs the X-Admin-Token header; without a valid one every path and method "
            "answers 401 (so 404, 405 and OPTIONS need the token). No CORS headers are sent. "
            f"{_body_rules(settings)}",
            "contact": {"email": CONTACT_EMAIL},
        },
        "servers": [{"url": "/"}],
        "security": [{"AdminToken": []}],
        "tags": [{"name": "admin", "description": "Fleet and snapshot operations."}],
        "paths": paths,
        "components": components,
    }
