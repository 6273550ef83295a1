"""The HTTP edge shared by the chat and admin functions.

One ``Router`` per function: it resolves the route (404/405), applies the per-IP rate
limit, runs the handler, maps every error to JSON once, adds CORS and rate-limit headers,
and writes the request's one summary log line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import flask

from chatbot.config import Settings
from chatbot.errors import (
    ChatbotError,
    ClientError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    UnsupportedMediaType,
)
from chatbot.logs import reset_request_context, set_request_context, trace_id_from_headers
from chatbot.ratelimit import RateLimiter, client_ip

logger = logging.getLogger("chatbot.http")
MAX_JSON_DEPTH = 32


@dataclass
class Reply:
    """A handler's result: JSON body, status, headers and fields for the summary log line."""

    body: dict
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    log: dict = field(default_factory=dict)
    raw: bytes | None = None
    content_type: str = "application/json"


Handler = Callable[[flask.Request], Reply]


@dataclass(frozen=True)
class Route:
    handler: Handler
    rate: str | None  # a Settings attribute naming the limit, or None for unlimited


def _depth(value, limit: int) -> bool:
    """True when ``value`` nests deeper than ``limit`` (iterative: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return False


def read_json(request: flask.Request, max_bytes: int) -> object:
    """The request's JSON body, or a ClientError that says exactly what is wrong with it."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"Request body is larger than {max_bytes} bytes")
    mimetype = (request.mimetype or "").lower()
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got {mimetype or 'nothing'}"
        )
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"Request body is larger than {max_bytes} bytes")
    if not raw.strip():
        raise ClientError("Request body is empty; send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ClientError("Request body is not valid UTF-8") from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise ClientError(f"JSON nests deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise ClientError(
            f"Request body is not valid JSON: {exc.msg} at position {exc.pos}"
        ) from None
    except ValueError:  # an integer longer than Python converts (sys.int_max_str_digits)
        raise ClientError("Request body is not valid JSON: a number has too many digits") from None
    if _depth(value, MAX_JSON_DEPTH):
        raise ClientError(f"JSON nests deeper than {MAX_JSON_DEPTH} levels")
    return value


def _cors_headers(settings: Settings, request: flask.Request) -> dict[str, str]:
    origin = request.headers.get("Origin")
    if not origin:
        return {}
    allowed = settings.allowed_origins
    if "*" in allowed:
        allow = "*"
    elif origin in allowed:
        allow = origin
    else:
        return {}
    headers = {
        "Access-Control-Allow-Origin": allow,
        "Access-Control-Expose-Headers": (
            "Retry-After, X-Request-Id, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset"
        ),
    }
    if allow != "*":
        headers["Vary"] = "Origin"
    return headers


def anonymize(ip: str) -> str:
    """A short stable hash of the client IP: enough to correlate lines, never the raw IP."""
    return hashlib.sha256(f"romega:{ip}".encode()).hexdigest()[:12]


class Router:
    """Dispatches one function's requests; the function's main.py supplies the route table."""

    def __init__(self, settings: Settings, routes: dict[str, dict[str, Route]]) -> None:
        self.settings = settings
        self.routes = routes
        self.limiter = RateLimiter()

    def __call__(self, request: flask.Request) -> flask.Response:
        started = time.perf_counter()
        request_id = request.headers.get("X-Request-Id", "")[:64] or uuid.uuid4().hex[:16]
        if not (request_id.isascii() and request_id.replace("-", "").isalnum()):
            request_id = uuid.uuid4().hex[:16]
        token = set_request_context(
            request_id=request_id, trace=trace_id_from_headers(request.headers)
        )
        path = request.path.rstrip("/") or "/"
        extra_headers: dict[str, str] = {"X-Request-Id": request_id}
        log_fields: dict = {}
        try:
            reply = self._dispatch(request, path, extra_headers)
        except ChatbotError as exc:
            if exc.status_code >= 500:
                logger.warning("%s %s -> %d: %s", request.method, path, exc.status_code, exc)
            reply = Reply(exc.body(), exc.status_code, exc.headers(), log=exc.log_fields)
        except Exception:
            logger.exception("Unhandled error on %s %s", request.method, path)
            reply = Reply({"error": "Internal server error", "status": "error"}, 500)
        log_fields = reply.log
        response = flask.Response(
            reply.raw if reply.raw is not None else json.dumps(reply.body),
            status=reply.status,
            content_type=reply.content_type,
        )
        for name, value in {
            **extra_headers,
            **_cors_headers(self.settings, request),
            **reply.headers,
        }.items():
            response.headers[name] = value
        latency = (time.perf_counter() - started) * 1000
        ip = client_ip(
            request.remote_addr,
            request.headers.get("X-Forwarded-For"),
            self.settings.trusted_proxy_hops,
        )
        summary = {
            "event": "request",
            "method": request.method,
            "route": path if path in self.routes else "(unknown)",
            "status": reply.status,
            "latency_ms": round(latency, 2),
            "client": anonymize(ip),
            **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in log_fields.items()},
        }
        logger.info(
            "%s %s %d %.1fms",
            request.method,
            summary["route"],
            reply.status,
            latency,
            extra={"fields": summary},
        )
        reset_request_context(token)
        return response

    def _dispatch(self, request: flask.Request, path: str, headers: dict[str, str]) -> Reply:
        methods = self.routes.get(path)
        if methods is None:
            raise NotFound(f"No route {path[:100]}; see GET / for the API")
        if request.method == "OPTIONS":
            allowed = sorted({*methods, "OPTIONS"})
            return Reply(
                {},
                204,
                {
                    "Allow": ", ".join(allowed),
                    "Access-Control-Allow-Methods": ", ".join(allowed),
                    "Access-Control-Allow-Headers": "Content-Type, X-Admin-Token, X-Request-Id",
                    "Access-Control-Max-Age": "600",
                },
                raw=b"",
            )
        route = methods.get(request.method) or (
            methods.get("GET") if request.method == "HEAD" else None
        )
        if route is None:
            raise MethodNotAllowed(request.method, sorted({*methods, "OPTIONS"}))
        if route.rate is not None:
            ip = client_ip(
                request.remote_addr,
                request.headers.get("X-Forwarded-For"),
                self.settings.trusted_proxy_hops,
            )
            decision = self.limiter.hit(path, getattr(self.settings, route.rate), ip)
            headers.update(decision.headers())
            if not decision.allowed:
                raise RateLimited(decision.limit_text, decision.retry_after, decision.headers())
        return route.handler(request)
