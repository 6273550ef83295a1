"""Request bodies: read them once, bounded; read the JSON safely; validate it with its model.

``read_body`` is the only reader of a request's stream. The Router calls it first for every
request of both functions, so a body is refused (413 by its Content-Length, unread; a chunked
one after MAX_BODY_BYTES + 1 bytes), rejected (400: malformed chunked framing, or shorter than
its Content-Length) or timed out (408: not in within BODY_DEADLINE_SECONDS) before any route
runs, and nothing reads the socket after it: functions-framework's own ``after_request`` hook
(``read_request``) calls ``request.get_data()``, which would otherwise read the whole rest of
any body into memory, or wait forever for bytes a client never sends.

Every way a body can be wrong ends in a ClientError whose message says exactly what, naming
the field: ``Field 'message' must be a string``, never a raw pydantic dump.
"""

from __future__ import annotations

import io
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import flask
from pydantic import BaseModel, ValidationError

from chatbot.errors import ClientError, PayloadTooLarge, UnsupportedMediaType
from chatbot.logs import annotate

__all__ = [
    "BODY_DEADLINE_SECONDS",
    "MAX_JSON_DEPTH",
    "BodyTimeout",
    "parse_body",
    "read_body",
    "read_json",
]
M = TypeVar("M", bound=BaseModel)
MAX_JSON_DEPTH = 32
# The whole body must be in this long after the router asks for it (a few KB from a phone
# take well under a second); a client that stalls or trickles is cut off, not waited for.
BODY_DEADLINE_SECONDS = 5.0
_BODY = "chatbot.body"  # environ key: the body as read_body read it
# What a field of the wrong type must be, by pydantic's error type.
_EXPECTED = {
    "string_type": "a string",
    "bool_type": "a boolean",
    "int_type": "an integer",
    "float_type": "a number",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
}


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


class BodyTimeout(ClientError):
    """The body did not arrive within BODY_DEADLINE_SECONDS."""

    status_code = 408
    public_message = "Request body did not arrive in time"


class _Deadlines:
    """One daemon thread that shuts the read side of a socket whose body is overdue.

    A socket timeout bounds each ``recv``, not the whole body (a client sending a byte just
    before each timeout would hold a thread for as long as it likes), so the deadline is
    enforced from outside: ``shutdown(SHUT_RD)`` makes the blocked ``recv`` return at once
    (end of stream), the read fails, and the reply (408) can still be written.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[int, tuple[float, socket.socket, threading.Event]] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    @contextmanager
    def bounded(self, sock: socket.socket, seconds: float) -> Iterator[Callable[[], bool]]:
        """While inside, ``sock`` is read-shut ``seconds`` from now; yields "has it been?"."""
        token, expired = next(self._ids), threading.Event()
        with self._cond:
            self._due[token] = (time.monotonic() + seconds, sock, expired)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="body-deadline", daemon=True)
                self._thread.start()
            self._cond.notify()
        try:
            yield expired.is_set
        finally:
            with self._cond:
                self._due.pop(token, None)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for token, (at, sock, expired) in list(self._due.items()):
                    if at <= now:
                        del self._due[token]
                        expired.set()
                        try:
                            sock.shutdown(socket.SHUT_RD)
                        except OSError:  # the client is gone already
                            pass
                soonest = min((at for at, _, _ in self._due.values()), default=None)
                self._cond.wait(None if soonest is None else max(0.0, soonest - now))


_DEADLINES = _Deadlines()


def read_body(
    request: flask.Request, max_bytes: int, deadline: float = BODY_DEADLINE_SECONDS
) -> bytes:
    """The request's body, at most ``max_bytes``, read once: later calls return the same bytes.

    Raises PayloadTooLarge (by Content-Length, before reading; or past ``max_bytes`` of a
    chunked body), ClientError (malformed framing, shorter than its Content-Length) or
    BodyTimeout (not in within ``deadline`` seconds, under gunicorn). Whatever happens, the
    request's stream is replaced by what was read (or nothing), so no later reader, the
    framework's included, touches the socket again.
    """
    environ = request.environ
    cached = environ.get(_BODY)
    if cached is not None:
        return cached
    body = b""
    try:
        body = _read(request, max_bytes, deadline)
        return body
    finally:
        environ[_BODY] = body
        request.stream = io.BytesIO(body)  # werkzeug's cached_property takes the assignment


def _read(request: flask.Request, max_bytes: int, deadline: float) -> bytes:
    length = request.content_length  # None when chunked
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if length is not None and length > max_bytes:
        raise PayloadTooLarge(f"Request body is larger than {max_bytes} bytes")
    if not length and not chunked:
        return b""
    sock = request.environ.get("gunicorn.socket")
    bounded = _DEADLINES.bounded(sock, deadline) if sock is not None else _never()
    with bounded as expired:
        try:
            data = request.stream.read(max_bytes + 1)
        except Exception as exc:  # noqa: BLE001 - whatever the server's reader raises
            # (gunicorn's InvalidChunkSize, NoMoreData; werkzeug's ClientDisconnected): the
            # client's framing, never ours. The class is enough for the log line.
            if expired():
                raise BodyTimeout(f"Request body did not arrive within {deadline:g} s") from None
            annotate(body_error=type(exc).__name__)
            raise ClientError(
                "Request body could not be read: malformed chunked encoding, or the "
                "connection ended before the body did"
            ) from None
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"Request body is larger than {max_bytes} bytes")
    if length is not None and len(data) < length:
        if expired():
            raise BodyTimeout(f"Request body did not arrive within {deadline:g} s")
        raise ClientError(
            f"Request body ended after {len(data)} of its {length} bytes (Content-Length)"
        )
    return data


@contextmanager
def _never() -> Iterator[Callable[[], bool]]:
    """No deadline (a WSGI server without a socket to shut, e.g. a test client)."""
    yield lambda: False


def read_json(request: flask.Request, max_bytes: int) -> object:
    """The request's JSON body, or a ClientError that says exactly what is wrong with it."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"Request body is larger than {max_bytes} bytes")
    mimetype = (request.mimetype or "").lower()
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got {mimetype or 'nothing'}"
        )
    raw = read_body(request, max_bytes)
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


def parse_body(request: flask.Request, model: type[M], max_bytes: int, **context: object) -> M:
    """The request's JSON body validated as ``model`` (``context`` carries limits from Settings)."""
    body = read_json(request, max_bytes)
    if not isinstance(body, dict):
        raise ClientError("Request body must be a JSON object")
    try:
        return model.model_validate(body, context=context)
    except ValidationError as exc:
        raise ClientError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """One sentence for the first thing wrong; unknown fields are named all at once."""
    errors = exc.errors(include_url=False, include_input=False)
    unknown = sorted(_field(e["loc"]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        return f"Unknown field(s): {', '.join(unknown)[:200]}"
    error = errors[0]
    name, kind = _field(error["loc"]), error["type"]
    if kind == "missing":
        return f"Field '{name}' is required"
    if kind in _EXPECTED:
        return f"Field '{name}' must be {_EXPECTED[kind]}"
    if kind == "field_rule":
        return f"Field '{name}' {error['msg']}"
    if kind == "string_too_long":
        return f"Field '{name}' must be at most {error['ctx']['max_length']} characters"
    if kind == "string_too_short":
        return f"Field '{name}' must not be empty"
    if kind == "string_pattern_mismatch":
        return f"Field '{name}' is not in the expected format"
    if kind == "literal_error":
        return f"Field '{name}' must be {error['ctx']['expected']}"
    return f"Field '{name}': {error['msg']}"


def _field(loc: tuple) -> str:
    """``("history", 0, "content")`` -> ``history[0].content``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
