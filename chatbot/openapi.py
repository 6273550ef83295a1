"""The OpenAPI 3.1 documents of the chat and admin functions, built from the settings.

Limits, the longest message and the largest body come from ``Settings``, so the document
served at ``GET /openapi.json`` describes the instance that serves it. The tests hold every
response the chat function sends to this document (tests/openapi_check.py), and Schemathesis
fuzzes a live instance against it, so a change of body or status shows up as a failing test.
"""

from __future__ import annotations

from limits import parse_many

from chatbot.config import API_VERSION, Settings
from chatbot.errors import FRIENDLY_GENERATION_ERROR

JSON = "application/json"
CONTACT_EMAIL = "info@romega-solutions.com"
EXAMPLE_QUESTION = "What services do you offer?"
EXAMPLE_VERSION = "20260104T103015Z-3f2a9c1d7e"
RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")

# The files of the swagger-ui-bundle-v2 package that GET /docs needs, plus our own
# initializer; chatbot/docs_api.py serves exactly these and nothing else.
DOCS_ASSETS = (
    "swagger-ui.css",
    "swagger-ui-bundle.js",
    "swagger-initializer.js",
    "favicon-32x32.png",
    "favicon-16x16.png",
)


def limit_text(rate: str) -> str:
    """'20/minute' -> '20 per 1 minute', as the 429 body spells it ('; ' between several)."""
    return "; ".join(str(item) for item in parse_many(rate))


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _headers(*names: str) -> dict:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


def _json_response(
    description: str,
    schema: dict,
    *,
    headers: tuple[str, ...] = (),
    example: object | None = None,
    examples: dict | None = None,
) -> dict:
    media: dict = {"schema": schema}
    if example is not None:
        media["example"] = example
    if examples is not None:
        media["examples"] = examples
    return {
        "description": description,
        "headers": _headers("X-Request-Id", *headers),
        "content": {JSON: media},
    }


def _error_response(description: str, example: str, *, headers: tuple[str, ...] = ()) -> dict:
    return _json_response(
        description,
        _ref("Error"),
        headers=headers,
        example={"error": example, "status": "error"},
    )


def _common_headers() -> dict:
    """Response headers, shared by both documents."""
    return {
        "X-Request-Id": {
            "description": "Identifies this request in the logs; echoes a well-formed "
            "X-Request-Id sent by the client, else a new one.",
            "required": True,
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9-]{1,64}$"},
        },
        "X-RateLimit-Limit": {
            "description": "Requests allowed per window for this client IP on this route.",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        },
        "X-RateLimit-Remaining": {
            "description": "Requests left in the current window.",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        },
        "X-RateLimit-Reset": {
            "description": "When the window frees a request, as Unix time in seconds.",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        },
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        },
        "Allow": {
            "description": "The methods this path accepts.",
            "required": True,
            "schema": {"type": "string", "examples": ["OPTIONS, POST"]},
        },
    }


def _common_schemas() -> dict:
    return {
        "Error": {
            "type": "object",
            "description": "Every error: a message that says what is wrong, safe to show.",
            "required": ["error", "status"],
            "additionalProperties": False,
            "properties": {
                "error": {"type": "string", "minLength": 1},
                "status": {"const": "error"},
            },
        },
        "RateLimitError": {
            "type": "object",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {"error": {"type": "string", "pattern": "^Rate limit exceeded: "}},
        },
    }


def _common_responses() -> dict:
    """Answers any path can give: 404 for unknown paths, 405, and the CORS preflight."""
    return {
        "NotFound": _error_response(
            "No such route (any path not in this document).",
            "No route /nope; see GET / for the API",
        ),
        "MethodNotAllowed": _error_response(
            "The path exists but not with this method; `Allow` lists the methods it takes.",
            "Method GET not allowed; use OPTIONS, POST",
            headers=("Allow",),
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
    }


def _limited(rate: str, responses: dict) -> dict:
    """A rate-limited operation's responses: ``responses`` plus its own 429."""
    too_many = _json_response(
        "Too many requests from this client IP on this route.",
        _ref("RateLimitError"),
        headers=("Retry-After", *RATE_HEADERS),
        # The body names the one limit that was hit; with several, the example shows the first.
        example={"error": f"Rate limit exceeded: {parse_many(rate)[0]}"},
    )
    return {**responses, "429": too_many}


# -- chat function --------------------------------------------------------------------------


def _chat_schemas(settings: Settings) -> dict:
    return {
        **_common_schemas(),
        "ChatRequest": {
            "type": "object",
            "required": ["message"],
            "additionalProperties": False,
            "properties": {
                "message": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": settings.max_message_chars,
                    "description": "The visitor's question. Control characters are removed; "
                    "a message with nothing else left is rejected.",
                    "examples": [EXAMPLE_QUESTION],
                },
                "use_cache": {
                    "type": "boolean",
                    "default": True,
                    "description": "false skips the cache lookup (the fresh answer is still "
                    "stored).",
                },
            },
        },
        "Source": {
            "type": "object",
            "required": ["title", "source", "score"],
            "additionalProperties": False,
            "properties": {
                "title": {"type": "string", "description": "The document's title."},
                "source": {"type": "string", "description": "The document's file name."},
                "score": {"type": "number", "description": "Relevance, higher is better."},
            },
        },
        "ChatAnswer": {
            "type": "object",
            "required": ["response", "status", "cached", "sources", "snapshot"],
            "additionalProperties": False,
            "properties": {
                "response": {"type": "string", "description": "The answer, citing sources."},
                "status": {"const": "success"},
                "cached": {"type": "boolean", "description": "Served from this instance's cache."},
                "sources": {
                    "type": "array",
                    "items": _ref("Source"),
                    "description": "The documents the answer draws on, best first; empty when "
                    "nothing relevant was found.",
                },
                "snapshot": {"type": "string", "description": "The knowledge snapshot used."},
            },
        },
        "GenerationError": {
            "type": "object",
            "description": "The answer could not be generated; a friendly text to show as is.",
            "required": ["response", "status"],
            "additionalProperties": False,
            "properties": {"response": {"type": "string"}, "status": {"const": "error"}},
        },
        "SnapshotStatus": {
            "type": "object",
            "required": ["uri", "epoch", "version"],
            "additionalProperties": False,
            "properties": {
                "uri": {"type": "string", "description": "Where snapshots are published."},
                "epoch": {"type": "integer", "description": "The cache epoch."},
                "version": {"type": ["string", "null"], "description": "null until loaded."},
                "created_at": {"type": ["string", "null"]},
                "documents": {"type": ["integer", "null"]},
                "chunks": {"type": "integer"},
                "embedding_model": {"type": "string"},
                "restore_seconds": {
                    "type": "object",
                    "additionalProperties": {"type": "number"},
                },
                "refused": {
                    "type": "object",
                    "description": "Snapshots this instance refused to serve, with the reason.",
                    "additionalProperties": {"type": "string"},
                },
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "message", "api_version", "cache_size", "snapshot", "generator"],
            "additionalProperties": False,
            "properties": {
                "status": {"enum": ["healthy", "unhealthy"]},
                "message": {"type": "string"},
                "api_version": {"type": "string"},
                "cache_size": {"type": "integer", "minimum": 0},
                "snapshot": _ref("SnapshotStatus"),
                "generator": {
                    "type": "string",
                    "description": "'gemini:<model>' or 'extractive' (no GOOGLE_API_KEY).",
                },
                "uptime_seconds": {"type": "number", "minimum": 0},
            },
        },
        "CacheStats": {
            "type": "object",
            "required": [
                "total_entries",
                "valid_entries",
                "expired_entries",
                "cache_ttl_seconds",
                "hits",
                "misses",
                "hit_rate",
            ],
            "additionalProperties": False,
            "properties": {
                "total_entries": {"type": "integer", "minimum": 0},
                "valid_entries": {"type": "integer", "minimum": 0},
                "expired_entries": {"type": "integer", "minimum": 0},
                "cache_ttl_seconds": {"type": "integer", "minimum": 1},
                "hits": {"type": "integer", "minimum": 0},
                "misses": {"type": "integer", "minimum": 0},
                "hit_rate": {"type": "number", "minimum": 0, "maximum": 1},
            },
        },
        "ApiInfo": {
            "type": "object",
            "required": [
                "name",
                "version",
                "description",
                "routes",
                "docs",
                "openapi",
                "contact",
            ],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "description": {"type": "string"},
                "routes": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["method", "path", "rate_limit"],
                        "additionalProperties": False,
                        "properties": {
                            "method": {"type": "string"},
                            "path": {"type": "string"},
                            "rate_limit": {
                                "type": "string",
                                "description": "e.g. '20/minute', or 'unlimited'.",
                            },
                        },
                    },
                },
                "docs": {"type": "string"},
                "openapi": {"type": "string"},
                "contact": {"type": "string"},
            },
        },
    }


def _chat_paths(settings: Settings) -> dict:
    chat_limit = limit_text(settings.rate_limit_chat)
    info_limit = limit_text(settings.rate_limit_info)
    stats_limit = limit_text(settings.rate_limit_stats)
    example_answer = {
        "response": "Romega Solutions offers four practices: Cloud Migration and "
        "Modernisation, Data and AI, Custom Software Engineering, and Managed Services [1].",
        "status": "success",
        "cached": False,
        "sources": [{"title": "Our Services", "source": "services.md", "score": 0.7312}],
        "snapshot": EXAMPLE_VERSION,
    }
    not_ready = {"error": "Service not ready: no snapshot loaded yet", "status": "error"}
    generation_error = {"response": FRIENDLY_GENERATION_ERROR, "status": "error"}
    limited = RATE_HEADERS
    preflight = {
        "summary": "CORS preflight",
        "tags": ["chat"],
        "responses": {"204": {"$ref": "#/components/responses/Preflight"}},
    }
    snapshot_example = {
        "uri": "gs://romega-knowledge/chatbot",
        "epoch": 0,
        "version": EXAMPLE_VERSION,
        "created_at": "2026-01-04T10:30:15+00:00",
        "documents": 14,
        "chunks": 120,
        "embedding_model": "all-MiniLM-L6-v2",
        "restore_seconds": {"download": 0.21, "extract": 0.05},
    }
    return {
        "/chat": {
            "post": {
                "operationId": "chat",
                "tags": ["chat"],
                "summary": "Ask a question",
                "description": (
                    "A grounded answer from Romega Solutions' documentation, with its sources. "
                    f"Limit: {chat_limit} per client IP. The JSON body may be at most "
                    f"{settings.max_body_bytes} bytes and the message at most "
                    f"{settings.max_message_chars} characters."
                ),
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": _ref("ChatRequest"),
                            "examples": {
                                "services": {"value": {"message": EXAMPLE_QUESTION}},
                                "fresh": {
                                    "summary": "Skip the cache",
                                    "value": {
                                        "message": "How much does a senior consultant cost?",
                                        "use_cache": False,
                                    },
                                },
                            },
                        }
                    },
                },
                "responses": _limited(
                    settings.rate_limit_chat,
                    {
                        "200": _json_response(
                            "The answer.",
                            _ref("ChatAnswer"),
                            headers=limited,
                            example=example_answer,
                        ),
                        "400": _error_response(
                            "The body is not a JSON object with a valid `message`.",
                            "Field 'message' is required",
                            headers=limited,
                        ),
                        "413": _error_response(
                            f"The body is larger than {settings.max_body_bytes} bytes.",
                            f"Request body is larger than {settings.max_body_bytes} bytes",
                            headers=limited,
                        ),
                        "415": _error_response(
                            "The Content-Type is not application/json.",
                            "Content-Type must be application/json, got text/plain",
                            headers=limited,
                        ),
                        "502": _json_response(
                            "Gemini refused to answer this question.",
                            _ref("GenerationError"),
                            headers=limited,
                            example=generation_error,
                        ),
                        "503": _json_response(
                            "No knowledge snapshot is being served yet, or Gemini stayed "
                            "unavailable past the retries.",
                            {"oneOf": [_ref("Error"), _ref("GenerationError")]},
                            headers=("Retry-After", *limited),
                            examples={
                                "not_ready": {"value": not_ready},
                                "generation": {"value": generation_error},
                            },
                        ),
                    },
                ),
            },
            "options": preflight,
        },
        "/": {
            "get": {
                "operationId": "apiInfo",
                "tags": ["info"],
                "summary": "What this API is",
                "description": f"Routes with their limits, and where the docs are. "
                f"Limit: {info_limit}.",
                "responses": _limited(
                    settings.rate_limit_info,
                    {"200": _json_response("API info.", _ref("ApiInfo"), headers=limited)},
                ),
            }
        },
        "/health": {
            "get": {
                "operationId": "health",
                "tags": ["info"],
                "summary": "Readiness",
                "description": "200 when a verified snapshot is served; 503 with the reason "
                "otherwise. Not rate limited.",
                "responses": {
                    "200": _json_response(
                        "Ready.",
                        _ref("Health"),
                        example={
                            "status": "healthy",
                            "message": "Romega Chatbot is ready",
                            "api_version": API_VERSION,
                            "cache_size": 3,
                            "snapshot": snapshot_example,
                            "generator": "gemini:gemini-2.5-flash",
                            "uptime_seconds": 812.4,
                        },
                    ),
                    "503": _json_response(
                        "Not ready; `message` says why.",
                        _ref("Health"),
                        headers=("Retry-After",),
                    ),
                },
            }
        },
        "/cache/stats": {
            "get": {
                "operationId": "cacheStats",
                "tags": ["info"],
                "summary": "This instance's answer cache",
                "description": f"Limit: {stats_limit}.",
                "responses": _limited(
                    settings.rate_limit_stats,
                    {"200": _json_response("Cache counters.", _ref("CacheStats"), headers=limited)},
                ),
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "tags": ["docs"],
                "summary": "This document",
                "description": f"Limit: {info_limit}.",
                "responses": _limited(
                    settings.rate_limit_info,
                    {
                        "200": _json_response(
                            "The OpenAPI 3.1 document.", {"type": "object"}, headers=limited
                        )
                    },
                ),
            }
        },
        "/docs": {
            "get": {
                "operationId": "docs",
                "tags": ["docs"],
                "summary": "Swagger UI",
                "description": "Interactive documentation; every asset is served by this "
                f"function (no CDN). Limit: {info_limit}.",
                "responses": _limited(
                    settings.rate_limit_info,
                    {
                        "200": {
                            "description": "The Swagger UI page.",
                            "headers": _headers("X-Request-Id", *limited),
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                    },
                ),
            }
        },
        "/docs/{asset}": {
            "get": {
                "operationId": "docsAsset",
                "tags": ["docs"],
                "summary": "A Swagger UI asset",
                "description": f"Only the files the page needs. Limit: {info_limit} per file.",
                "parameters": [
                    {
                        "name": "asset",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": list(DOCS_ASSETS)},
                    }
                ],
                "responses": _limited(
                    settings.rate_limit_info,
                    {
                        "200": {
                            "description": "The file.",
                            "headers": _headers("X-Request-Id", *limited),
                            "content": {
                                "text/css": {"schema": {"type": "string"}},
                                "text/javascript": {"schema": {"type": "string"}},
                                "image/png": {"schema": {"contentMediaType": "image/png"}},
                            },
                        },
                        "404": {"$ref": "#/components/responses/NotFound"},
                    },
                ),
            }
        },
    }


def chat_document(settings: Settings) -> dict:
    """The OpenAPI 3.1 document of the public chat function."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Romega Chatbot API",
            "version": API_VERSION,
            "description": (
                "Answers questions about Romega Solutions from its own documentation. "
                "Limits are per client IP and per route (moving window). Every error is JSON "
                'with a clear message: `{"error": ..., "status": "error"}`; any other path '
                "answers 404 and any other method 405, both with that body."
            ),
            "contact": {"email": CONTACT_EMAIL},
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "chat", "description": "Questions and answers."},
            {"name": "info", "description": "Status of this instance."},
            {"name": "docs", "description": "This documentation."},
        ],
        "paths": _chat_paths(settings),
        "components": {
            "schemas": _chat_schemas(settings),
            "headers": _common_headers(),
            "responses": _common_responses(),
        },
    }


# -- admin function -------------------------------------------------------------------------


def _admin_schemas() -> dict:
    # Nested objects stay open: they carry manifests and heartbeats that grow over time.
    snapshot_summary = {
        "type": "object",
        "required": ["version"],
        "properties": {
            "version": {"type": "string"},
            "created_at": {"type": ["string", "null"]},
            "documents": {"type": ["integer", "null"]},
            "chunks": {"type": "integer"},
            "embedding_model": {"type": "string"},
        },
    }
    return {
        **_common_schemas(),
        "FleetStats": {
            "type": "object",
            "description": "The cache epoch and the stats each live chat instance last "
            "reported in its heartbeat.",
            "required": ["epoch", "instances", "stale_instances", "totals"],
            "properties": {
                "epoch": {"type": "integer", "minimum": 0},
                "instances": {"type": "array", "items": {"type": "object"}},
                "stale_instances": {"type": "array", "items": {"type": "object"}},
                "totals": {
                    "type": "object",
                    "required": ["instances", "entries", "hits", "misses", "hit_rate"],
                    "properties": {
                        "instances": {"type": "integer", "minimum": 0},
                        "entries": {"type": "integer", "minimum": 0},
                        "hits": {"type": "integer", "minimum": 0},
                        "misses": {"type": "integer", "minimum": 0},
                        "hit_rate": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                },
                "fresh_within_seconds": {"type": "number"},
                "pruned": {"type": "integer", "minimum": 0},
            },
        },
        "CacheCleared": {
            "type": "object",
            "required": ["message", "epoch"],
            "properties": {
                "message": {"type": "string", "pattern": "^Cache cleared\\."},
                "epoch": {"type": "integer", "minimum": 1},
            },
        },
        "SnapshotList": {
            "type": "object",
            "required": ["latest", "count", "snapshots"],
            "properties": {
                "latest": {"type": ["string", "null"], "description": "The live version."},
                "count": {"type": "integer", "minimum": 0},
                "snapshots": {
                    "type": "array",
                    "description": "Published versions with their manifests, newest first; "
                    "one that cannot be activated carries an `error`.",
                    "items": {
                        **snapshot_summary,
                        "properties": {
                            **snapshot_summary["properties"],
                            "latest": {"type": "boolean"},
                            "archive_present": {"type": "boolean"},
                            "error": {"type": "string"},
                        },
                    },
                },
            },
        },
        "ActivateRequest": {
            "type": "object",
            "required": ["version"],
            "additionalProperties": False,
            "properties": {
                "version": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 100,
                    "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                }
            },
        },
        "Activated": {
            "type": "object",
            "required": ["version", "previous", "message", "snapshot"],
            "properties": {
                "version": {"type": "string"},
                "previous": {"type": ["string", "null"]},
                "message": {"type": "string"},
                "snapshot": snapshot_summary,
            },
        },
        "AdminInfo": {
            "type": "object",
            "required": ["name", "version", "routes"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "description": {"type": "string"},
                "authentication": {"type": "string"},
                "routes": {"type": "array", "items": {"type": "object"}},
                "openapi": {"type": "string"},
            },
        },
    }


def _admin_operation(
    operation_id: str, summary: str, description: str, rate: str, ok: dict, **errors: dict
) -> dict:
    """An admin operation: every one is behind the token and may find the bucket unreachable."""
    return {
        "operationId": operation_id,
        "summary": summary,
        "description": f"{description} Limit: {limit_text(rate)}.".strip(),
        "responses": _limited(
            rate,
            {
                "200": ok,
                "401": {"$ref": "#/components/responses/Unauthorized"},
                **errors,
                "503": {"$ref": "#/components/responses/StoreUnreachable"},
            },
        ),
    }


def admin_document(settings: Settings) -> dict:
    """The OpenAPI 3.1 document of the private admin function (served behind the token)."""
    read, write = settings.rate_limit_admin, settings.rate_limit_admin_write
    within = f"{settings.control_poll_seconds:g}"
    responses = _common_responses()
    responses["Unauthorized"] = _error_response(
        "X-Admin-Token is missing or wrong, or no ADMIN_TOKEN is configured (fail closed).",
        "Missing or invalid X-Admin-Token",
    )
    responses["StoreUnreachable"] = _error_response(
        "The snapshot bucket could not be reached; retry.",
        "Service not ready: the snapshot store is unreachable: ...",
        headers=("Retry-After",),
    )
    conflict = _error_response(
        "The snapshot fails its checks, or another writer changed the bucket meanwhile.",
        f"Snapshot {EXAMPLE_VERSION} cannot be activated: ...",
        headers=RATE_HEADERS,
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Romega Chatbot admin API",
            "version": API_VERSION,
            "description": "Fleet-wide cache control and snapshot rollback. Private: every "
            "request needs the X-Admin-Token header.",
            "contact": {"email": CONTACT_EMAIL},
        },
        "servers": [{"url": "/"}],
        "security": [{"AdminToken": []}],
        "paths": {
            "/": {
                "get": _admin_operation(
                    "adminInfo",
                    "What this API is",
                    "Routes with their limits.",
                    read,
                    _json_response("API info.", _ref("AdminInfo"), headers=RATE_HEADERS),
                )
            },
            "/openapi.json": {
                "get": _admin_operation(
                    "adminOpenapi",
                    "This document",
                    "",
                    read,
                    _json_response(
                        "The OpenAPI 3.1 document.", {"type": "object"}, headers=RATE_HEADERS
                    ),
                )
            },
            "/cache/stats": {
                "get": _admin_operation(
                    "fleetCacheStats",
                    "Fleet cache stats",
                    "What every live chat instance last reported.",
                    read,
                    _json_response("Fleet view.", _ref("FleetStats"), headers=RATE_HEADERS),
                )
            },
            "/cache": {
                "delete": _admin_operation(
                    "clearCache",
                    "Clear the cache on every instance",
                    "Bumps the cache epoch; each chat instance drops its entries within "
                    f"CONTROL_POLL_SECONDS ({within} s).",
                    write,
                    _json_response("Cleared.", _ref("CacheCleared"), headers=RATE_HEADERS),
                )
            },
            "/snapshots": {
                "get": _admin_operation(
                    "listSnapshots",
                    "Published snapshots",
                    "Every published version with its manifest, and which one is LATEST.",
                    read,
                    _json_response(
                        "Versions and LATEST.", _ref("SnapshotList"), headers=RATE_HEADERS
                    ),
                )
            },
            "/snapshots/activate": {
                "post": {
                    **_admin_operation(
                        "activateSnapshot",
                        "Roll back (or forward) to a published snapshot",
                        "Points LATEST at `version` once its archive checks out; chat "
                        f"instances switch within {within} s of their next request.",
                        write,
                        _json_response(
                            "LATEST now points at the version.",
                            _ref("Activated"),
                            headers=RATE_HEADERS,
                        ),
                        **{
                            "400": _error_response(
                                'The body is not {"version": <snapshot name>}.',
                                "Field 'version' is required",
                                headers=RATE_HEADERS,
                            ),
                            "404": _error_response(
                                "No such published version.",
                                f"Snapshot {EXAMPLE_VERSION} is not published (see GET /snapshots)",
                                headers=RATE_HEADERS,
                            ),
                            "409": conflict,
                            "413": _error_response(
                                f"The body is larger than {settings.max_body_bytes} bytes.",
                                f"Request body is larger than {settings.max_body_bytes} bytes",
                                headers=RATE_HEADERS,
                            ),
                            "415": _error_response(
                                "The Content-Type is not application/json.",
                                "Content-Type must be application/json, got text/plain",
                                headers=RATE_HEADERS,
                            ),
                        },
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {
                            JSON: {
                                "schema": _ref("ActivateRequest"),
                                "example": {"version": EXAMPLE_VERSION},
                            }
                        },
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "AdminToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Admin-Token",
                    "description": "Compared in constant time with ADMIN_TOKEN.",
                }
            },
            "schemas": _admin_schemas(),
            "headers": _common_headers(),
            "responses": responses,
        },
    }
