"""The HTTP edge shared by the chat and admin functions.

One ``Router`` per function sees every request first. In order: it reads the body (bounded
in size and time, ``chatbot.web.bodies.read_body``: 413, 400 or 408 before anything else);
with ``authorize`` (the admin function) it checks the caller before the route is even
looked up, behind one per-IP limit on failed attempts; it resolves the route (404/405),
applies the route's per-IP rate limit, runs the handler, maps every error to JSON once, adds
CORS (unless ``cors=False``) and rate-limit headers, and writes the request's one summary
log line from the fields that any layer added with ``chatbot.logs.annotate`` while serving
it. It also answers ``GET /`` with its own table.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import flask

from chatbot.config import Settings
from chatbot.errors import ChatbotError, MethodNotAllowed, NotFound, RateLimited, Unauthorized
from chatbot.logs import RequestContext, request_context, resumed, trace_id_from_headers
from chatbot.shared_state.link import RedisLink
from chatbot.web.bodies import read_body
from chatbot.web.ratelimit import RateLimiter, client_ip

__all__ = ["FAILED_AUTH", "Handler", "Reply", "Route", "Router"]
logger = logging.getLogger(__name__)
# The rate-limit "route" every failed authorization of a client counts against, whatever
# path it tried: guessing the token is as slow on one route as spread over all of them.
FAILED_AUTH = "(unauthorized)"


@dataclass
class Reply:
    """A handler's result: a JSON body (or raw bytes, or a stream), status and headers."""

    body: dict
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    content_type: str = "application/json"
    stream: Iterator[bytes] | None = None  # sent as it is produced (SSE)


Handler = Callable[[flask.Request], Reply]


@dataclass(frozen=True)
class Route:
    """A handler and the Settings attribute naming its per-IP limit (None: unlimited)."""

    handler: Handler
    rate: str | None
    listed: bool = True  # shown by GET / (Swagger UI's asset files are not)


_EXPOSED = {
    "Access-Control-Expose-Headers": (
        "Retry-After, X-Request-Id, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset"
    )
}


def _cors_headers(settings: Settings, request: flask.Request) -> dict[str, str]:
    """CORS headers for ``request``'s Origin.

    Unless every origin is allowed, the answer depends on the Origin, so it says
    ``Vary: Origin`` whatever the Origin (or none) was: a shared cache must not hand one
    origin's answer to another.
    """
    origin = request.headers.get("Origin")
    if "*" in settings.allowed_origins:
        return {"Access-Control-Allow-Origin": "*", **_EXPOSED} if origin else {}
    if origin in settings.allowed_origins:
        return {"Access-Control-Allow-Origin": origin, **_EXPOSED, "Vary": "Origin"}
    return {"Vary": "Origin"}


def _request_id(request: flask.Request) -> str:
    """The client's X-Request-Id when it is short and plain, else a new one."""
    given = request.headers.get("X-Request-Id", "")[:64]
    if given and given.isascii() and given.replace("-", "").isalnum():
        return given
    return uuid.uuid4().hex[:16]


def anonymize(ip: str) -> str:
    """A short stable hash of the client IP: enough to correlate lines, never the raw IP."""
    return hashlib.sha256(f"romega:{ip}".encode()).hexdigest()[:12]


class Router:
    """Dispatches one function's requests over the route tables its handlers expose."""

    def __init__(
        self,
        settings: Settings,
        routes: dict[str, dict[str, Route]],
        *,
        index: Callable[[list[dict]], dict],
        index_rate: str,
        guard: Callable[[Handler], Handler] | None = None,
        authorize: Callable[[flask.Request], None] | None = None,
        failed_auth_rate: str | None = None,
        cors: bool = True,
        shared: RedisLink | None = None,
    ) -> None:
        """``index`` makes GET /'s body from the route listing; ``guard`` wraps every handler.

        ``authorize`` (raising Unauthorized) runs for every request before its route is
        looked up, so without credentials every path and method answers 401 and nothing
        about the routes shows; its failures count against ``failed_auth_rate`` (a Settings
        attribute) per client, checked before ``authorize`` runs. ``cors=False`` sends no
        CORS headers at all. ``shared`` (REDIS_URL) keeps the limits in Redis for the fleet.
        """
        if (authorize is None) != (failed_auth_rate is None):
            raise ValueError("authorize and failed_auth_rate go together")
        self.settings = settings
        self.authorize = authorize
        self.failed_auth_rate = failed_auth_rate
        self.cors = cors
        self._auth_lock = threading.Lock()
        self._describe = index
        table = {**routes, "/": {"GET": Route(self._index, index_rate)}}
        wrap = guard or (lambda handler: handler)
        self.routes = {
            path: {
                method: Route(wrap(r.handler), r.rate, r.listed) for method, r in methods.items()
            }
            for path, methods in table.items()
        }
        self.limiter = RateLimiter(settings.ipv6_prefix_length, shared)

    def _index(self, request: flask.Request) -> Reply:
        return Reply(self._describe(self.listing()))

    def listing(self) -> list[dict]:
        """Every listed route with its limit, as GET / shows them."""
        return [
            {
                "method": method,
                "path": path,
                "rate_limit": getattr(self.settings, route.rate) if route.rate else "unlimited",
            }
            for path, methods in self.routes.items()
            for method, route in methods.items()
            if route.listed
        ]

    def __call__(self, request: flask.Request) -> flask.Response:
        """Answer one request: always JSON (or the route's own content), never a traceback."""
        started = time.perf_counter()
        request_id = _request_id(request)
        path = request.path.rstrip("/") or "/"
        ip = client_ip(
            request.remote_addr,
            request.headers.get("X-Forwarded-For"),
            self.settings.trusted_proxy_hops,
        )
        headers = {"X-Request-Id": request_id}
        with request_context(request_id, trace_id_from_headers(request.headers)) as context:
            reply = self._reply(request, path, ip, headers)
            if reply.stream is not None:
                body = self._streamed(reply, context, (request.method, path, ip, started))
                headers.update({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            else:
                body = reply.raw if reply.raw is not None else json.dumps(reply.body)
            response = flask.Response(body, status=reply.status, content_type=reply.content_type)
            if self.cors:
                headers.update(_cors_headers(self.settings, request))
            headers.update(reply.headers)
            for name, value in headers.items():
                response.headers[name] = value
            if reply.stream is None:
                self._log(request.method, path, reply.status, ip, started, context.fields)
        return response

    def _streamed(self, reply: Reply, context: RequestContext, request: tuple) -> Iterator[bytes]:
        """The reply's stream, run in the request's context; the log line comes at its end."""
        assert reply.stream is not None
        method, path, ip, started = request
        try:
            with resumed(context):
                yield from reply.stream
        finally:
            reply.stream.close()  # a visitor who left: stop the generation behind it
            with resumed(context):
                self._log(method, path, reply.status, ip, started, context.fields)

    def _reply(self, request: flask.Request, path: str, ip: str, headers: dict[str, str]) -> Reply:
        """The handler's reply, or the error it raised as its JSON reply."""
        try:
            return self._dispatch(request, path, ip, headers)
        except ChatbotError as exc:
            if exc.status_code >= 500:
                logger.warning("%s %s -> %d: %s", request.method, path, exc.status_code, exc)
            return Reply(exc.body(), exc.status_code, exc.headers())
        except Exception:
            logger.exception("Unhandled error on %s %s", request.method, path)
            return Reply({"error": "Internal server error", "status": "error"}, 500)

    def _log(
        self, method: str, path: str, status: int, ip: str, started: float, fields: dict
    ) -> None:
        """The request's one summary line, with the fields the layers annotated."""
        latency = (time.perf_counter() - started) * 1000
        route = path if path in self.routes else "(unknown)"
        summary = {
            "event": "request",
            "method": method,
            "route": route,
            "status": status,
            "latency_ms": round(latency, 2),
            "client": anonymize(ip),
            **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in fields.items()},
        }
        logger.info("%s %s %d %.1fms", method, route, status, latency, extra={"fields": summary})

    def _authorized(self, request: flask.Request, ip: str) -> None:
        """Raise RateLimited or Unauthorized unless ``authorize`` accepts the request.

        A client past its failed attempts is refused before its credentials are compared
        (even right ones), so guessing stops at the limit; the lock makes that limit exact
        when guesses arrive at once (the comparison takes microseconds).
        """
        assert self.authorize is not None and self.failed_auth_rate is not None
        rate = getattr(self.settings, self.failed_auth_rate)
        with self._auth_lock:
            decision = self.limiter.peek(FAILED_AUTH, rate, ip)
            if not decision.allowed:
                raise RateLimited(decision.limit_text, decision.retry_after, decision.headers())
            try:
                self.authorize(request)
            except Unauthorized:
                self.limiter.hit(FAILED_AUTH, rate, ip)
                raise

    def _dispatch(
        self, request: flask.Request, path: str, ip: str, headers: dict[str, str]
    ) -> Reply:
        read_body(request, self.settings.max_body_bytes)
        if self.authorize is not None:
            self._authorized(request, ip)
        methods = self.routes.get(path)
        if methods is None:
            raise NotFound(f"No route {path[:100]}; see GET / for the API")
        if request.method == "OPTIONS":
            allowed = ", ".join(sorted({*methods, "OPTIONS"}))
            preflight = {"Allow": allowed}
            if self.cors:
                preflight |= {
                    "Access-Control-Allow-Methods": allowed,
                    "Access-Control-Allow-Headers": "Content-Type, X-Admin-Token, X-Request-Id",
                    "Access-Control-Max-Age": "600",
                }
            return Reply({}, 204, preflight, raw=b"")
        route = methods.get(request.method) or (
            methods.get("GET") if request.method == "HEAD" else None
        )
        if route is None:
            raise MethodNotAllowed(request.method, sorted({*methods, "OPTIONS"}))
        if route.rate is not None:
            decision = self.limiter.hit(path, getattr(self.settings, route.rate), ip)
            headers.update(decision.headers())
            if not decision.allowed:
                raise RateLimited(decision.limit_text, decision.retry_after, decision.headers())
        return route.handler(request)
