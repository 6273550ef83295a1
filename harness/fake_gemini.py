"""A fake Gemini REST server that the real google-genai client can be pointed at.

It speaks the Gemini API routes the SDK calls when ``HttpOptions(base_url=...)`` is set:

    POST /v1beta/models/{model}:generateContent
    POST /v1beta/models/{model}:streamGenerateContent?alt=sse   (``generate_content_stream``)
    POST /v1beta/models/{model}:batchEmbedContents   (what ``models.embed_content`` calls)
    POST /v1beta/models/{model}:embedContent

Every request is recorded (path, headers, parsed JSON body). Outcomes can be scripted per
call (``fake.script([503, "drop", answer("hi")])``), drawn at random
(``fake.failure_rate(0.05, seed=1)``) or slowed down (``fake.delay(0.05)``).

Embeddings are deterministic bag-of-words vectors of the requested dimension. A quota
(``fake.embed_quota(requests=5, per_seconds=1.0)``) answers batchEmbedContents calls past it
with 429 RESOURCE_EXHAUSTED and the RetryInfo ``retryDelay`` until a slot frees, as Google's
per-minute quotas do; ``wrong_embeddings(drop=1)`` scripts a reply of the wrong shape;
``fake.embedded_texts`` counts each text in the embedding replies actually sent. The default
reply quotes the first sentence of the first passage in the prompt's ``<context>`` block, so
answers are deterministic and grounded in what the caller sent.

A stream call answers ``text/event-stream`` (chunked, keep-alive): the same text the
non-streaming route would answer, split by words into a few ``data: <GenerateContentResponse>``
events (``split_chunks``), finishReason STOP on the last. Its outcomes are scripted apart
(``fake.script([503, "drop", midstream(after=2)], method=STREAM)``); an error status, "drop"
or "hang" happens before anything is sent, ``midstream(after=n)`` sends n chunks and then
drops the connection (or sends an error event, or stalls). ``fake.stream_delays(first_chunk,
between_chunks)`` slows streams down; ``fake.disconnects`` counts clients that went away
before their stream ended (noticed within ~50 ms while a chunk is pending).

Run it alone with ``python -m harness.fake_gemini --port 8765 [--failure-rate 0.05]
[--delay 0.05] [--first-chunk-delay 0.3] [--chunk-delay 0.05] [--stream-chunks 6]
[--midstream-failure-rate 0.05]``; it prints ``listening on http://127.0.0.1:8765``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import random
import re
import select
import signal
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from harness.running import Running

FALLBACK_ANSWER = (
    "Romega Solutions can help with that; please contact info@romega-solutions.com for details."
)
HANG_SECONDS = 600.0
DEFAULT_EMBEDDING_DIMENSION = 768
STREAM = "streamGenerateContent"  # the RPC name of a stream call, for script(method=STREAM)
DEFAULT_STREAM_CHUNKS = 6
_POLL_SECONDS = 0.05  # how often a pending stream looks for a client that went away

_ROUTE = re.compile(
    r"^/(?P<version>[^/]+)/(?:models|tunedModels)/(?P<model>[^/:]+):(?P<method>\w+)$"
)
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_KEYWORDS = ("hang", "drop", "blocked")


@dataclasses.dataclass(frozen=True)
class Reply:
    """One scripted outcome: an answer, an error status, or an error with a retry hint."""

    status: int = 200
    text: str | None = None  # for 200: the answer; None = the default extraction
    retry_delay: float | None = None  # google.rpc.RetryInfo retryDelay in the error details
    retry_after: float | None = None  # a Retry-After header
    blocked: bool = False  # 200 with no candidates and promptFeedback.blockReason
    # Stream calls only: after this many chunks the stream fails (a generateContent call
    # given such a reply has its connection dropped).
    midstream_after: int | None = None
    midstream_status: int | None = None  # the failure is an error event, not a dropped socket
    midstream_hang: bool = False  # the failure is a stall until the server stops
    # batchEmbedContents only: a reply of the wrong shape (fewer vectors, another dimension).
    drop_embeddings: int = 0
    embedding_dimension: int | None = None


def answer(text: str) -> Reply:
    """A 200 whose answer is ``text``."""
    return Reply(text=text)


def midstream(
    after: int = 1, *, status: int | None = None, hang: bool = False, text: str | None = None
) -> Reply:
    """A stream that sends ``after`` chunks, then fails.

    The failure is a dropped connection, or with ``status`` an error event in Google's format
    (``data: {"error": ...}``), or with ``hang`` a stall until the server stops.
    """
    if after < 0:
        raise ValueError("after must be >= 0")
    return Reply(
        text=text,
        midstream_after=after,
        midstream_status=status,
        midstream_hang=hang,
    )


def wrong_embeddings(drop: int = 0, dimension: int | None = None) -> Reply:
    """A batchEmbedContents 200 with ``drop`` vectors missing, or vectors of ``dimension``."""
    return Reply(drop_embeddings=drop, embedding_dimension=dimension)


def rate_limited(retry_delay: float | None = 30.0, retry_after: float | None = None) -> Reply:
    """A 429 carrying a RetryInfo retryDelay (and optionally a Retry-After header)."""
    return Reply(status=429, retry_delay=retry_delay, retry_after=retry_after)


Outcome = int | str | Reply


def _normalise(outcome: Outcome) -> Reply | str:
    if isinstance(outcome, Reply):
        return outcome
    if isinstance(outcome, bool):
        raise TypeError(f"not an outcome: {outcome!r}")
    if isinstance(outcome, int):
        return Reply(status=outcome)
    if outcome == "blocked":
        return Reply(blocked=True)
    if outcome in _KEYWORDS:
        return outcome
    raise ValueError(
        f"unknown outcome {outcome!r}: use a status code, {', '.join(_KEYWORDS)}, "
        "answer(text), rate_limited(seconds) or midstream(after)"
    )


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """What the client sent."""

    method: str  # the RPC: generateContent, batchEmbedContents, ...
    path: str
    model: str
    headers: dict[str, str]
    body: Any


def error_body(status: int, retry_delay: float | None = None) -> dict[str, Any]:
    """An error in Google's JSON format, with RetryInfo when a delay is given."""
    error: dict[str, Any] = {
        "code": status,
        "message": f"fake Gemini error {status}",
        "status": _STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if retry_delay is not None:
        error["details"] = [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_delay}s"}
        ]
    return {"error": error}


def _prompt_text(body: Any) -> str:
    """The user turns' text, concatenated."""
    texts = []
    for content in (body or {}).get("contents", []):
        if content.get("role", "user") == "user":
            texts.extend(part.get("text", "") for part in content.get("parts", []))
    return "\n".join(texts)


_METADATA_LINE = re.compile(
    r"^\s*(<[^>]*>|\[\d+\].*|#+.*|(source|title|url|score|passage)\b[^:]{0,20}:.*|-{3,}|=+)\s*$",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"^(.+?[.!?])(?=\s|$)", re.DOTALL)


def default_answer(prompt: str) -> str:
    """Quote the first sentence of the first passage between <context> and </context>."""
    match = re.search(r"<context>(.*?)</context>", prompt, re.DOTALL | re.IGNORECASE)
    if match is None:
        return FALLBACK_ANSWER
    for line in match.group(1).splitlines():
        if not line.strip() or _METADATA_LINE.match(line):
            continue
        text = re.sub(r"<[^>]+>", " ", line).strip().strip("\"'“”> ").strip()
        if not text:
            continue
        sentence = _SENTENCE.match(text)
        quoted = (sentence.group(1) if sentence else text)[:300]
        return f"Based on the provided context: {quoted}"
    return FALLBACK_ANSWER


def split_chunks(text: str, count: int = DEFAULT_STREAM_CHUNKS) -> list[str]:
    """``text`` in at most ``count`` word-aligned pieces whose concatenation is ``text``."""
    words = re.findall(r"\s*\S+\s*", text)
    if len(words) <= 1:
        return [text]
    count = max(1, min(count, len(words)))
    size, extra = divmod(len(words), count)
    pieces, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        pieces.append("".join(words[start:end]))
        start = end
    return pieces


def fake_embedding(text: str, dimension: int = DEFAULT_EMBEDDING_DIMENSION) -> list[float]:
    """A deterministic, L2-normalised bag-of-words vector: similar texts get similar vectors."""
    vector = [0.0] * dimension
    for word in re.findall(r"\w+", text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        index = int.from_bytes(digest[:4], "little") % dimension
        vector[index] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:
        vector[0], norm = 1.0, 1.0
    return [v / norm for v in vector]


def _request_text(request: dict[str, Any]) -> str:
    """The text of one embedding request."""
    return " ".join(p.get("text", "") for p in request.get("content", {}).get("parts", []))


def _sse(payload: Any) -> bytes:
    """One server-sent event carrying ``payload`` as JSON."""
    return b"data: " + json.dumps(payload).encode() + b"\r\n\r\n"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the benchmarks open many connections at once
    fake: FakeGemini


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's httpx client expects
    # Headers and body go out in two writes; with Nagle on, the body waits ~40 ms for the
    # client's delayed ACK on every call.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        self.server.fake._track(self.connection, add=False)

    def log_message(self, *args: Any) -> None:
        pass  # quiet: tests and benchmarks read the recorded requests instead

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        self._send_json(404, error_body(404))

    def do_POST(self) -> None:  # noqa: N802 (stdlib naming)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._send_json(400, error_body(400))
            return
        path = self.path.split("?", 1)[0]
        route = _ROUTE.match(path)
        if route is None:
            self._send_json(404, error_body(404))
            return
        fake = self.server.fake
        method, model = route.group("method"), route.group("model")
        fake._record(RecordedRequest(method, self.path, model, dict(self.headers.items()), body))
        outcome = fake._over_quota(method) or fake._next_outcome(method)
        if fake._latency:
            fake._stopping.wait(fake._latency)
        if outcome == "hang":
            fake._stopping.wait(HANG_SECONDS)
            self._drop()
            return
        if outcome == "drop":
            self._drop()
            return
        assert isinstance(outcome, Reply)
        if outcome.status != 200:
            headers = {}
            if outcome.retry_after is not None:
                headers["Retry-After"] = f"{outcome.retry_after:g}"
            self._send_json(
                outcome.status, error_body(outcome.status, outcome.retry_delay), headers
            )
            return
        if method == "generateContent":
            if outcome.midstream_after is not None:  # a stream failure, seen without a stream
                self._drop()
                return
            self._send_json(200, self._generation(body, model, outcome))
        elif method == STREAM:
            self._stream(body, model, outcome)
        elif method == "batchEmbedContents":
            self._batch_embed(body, outcome)
        elif method == "embedContent":
            self._send_json(200, {"embedding": {"values": self._embed(body or {})}})
        else:
            self._send_json(404, error_body(404))

    def _batch_embed(self, body: Any, outcome: Reply) -> None:
        """One vector per request (or the wrong shape ``outcome`` asks for); texts counted."""
        requests = (body or {}).get("requests", [])
        requests = requests[: max(0, len(requests) - outcome.drop_embeddings)]
        texts = [_request_text(r) for r in requests]
        embeddings = [{"values": self._embed(r, outcome.embedding_dimension)} for r in requests]
        self._send_json(200, {"embeddings": embeddings})
        self.server.fake._count_embedded(texts)

    @staticmethod
    def _embed(request: dict[str, Any], dimension: int | None = None) -> list[float]:
        dimension = dimension or request.get("outputDimensionality") or DEFAULT_EMBEDDING_DIMENSION
        return fake_embedding(_request_text(request), int(dimension))

    @staticmethod
    def _generation(body: Any, model: str, outcome: Reply) -> dict[str, Any]:
        prompt = _prompt_text(body)
        usage = {"promptTokenCount": len(prompt.split())}
        if outcome.blocked:
            return {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": usage}
        text = outcome.text if outcome.text is not None else default_answer(prompt)
        usage["candidatesTokenCount"] = len(text.split())
        usage["totalTokenCount"] = usage["promptTokenCount"] + usage["candidatesTokenCount"]
        return {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": text}]},
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": usage,
            "modelVersion": model,
        }

    @staticmethod
    def _stream_events(body: Any, model: str, outcome: Reply, chunks: int) -> list[dict[str, Any]]:
        """The non-streaming reply cut into GenerateContentResponse chunks."""
        whole = _Handler._generation(body, model, outcome)
        if "candidates" not in whole:  # blocked: one event with the prompt feedback
            return [whole]
        usage = whole["usageMetadata"]
        pieces = split_chunks(whole["candidates"][0]["content"]["parts"][0]["text"], chunks)
        events = []
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            candidate: dict[str, Any] = {
                "content": {"role": "model", "parts": [{"text": piece}]},
                "index": 0,
            }
            if last:
                candidate["finishReason"] = "STOP"
            events.append(
                {
                    "candidates": [candidate],
                    "usageMetadata": usage
                    if last
                    else {"promptTokenCount": usage["promptTokenCount"]},
                    "modelVersion": model,
                }
            )
        return events

    def _stream(self, body: Any, model: str, outcome: Reply) -> None:
        """Answer a stream call: chunked text/event-stream, one ``data:`` event per chunk."""
        fake = self.server.fake
        with fake._lock:
            chunks = fake._stream_chunks
            first_delay, between = fake._first_chunk_delay, fake._chunk_delay
        events = self._stream_events(body, model, outcome, chunks)
        fail_after = outcome.midstream_after
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
        except OSError:
            self._client_left()
            return
        for index, event in enumerate(events):
            if not self._pause(first_delay if index == 0 else between):
                return
            if index == fail_after:
                self._fail_stream(outcome)
                return
            if not self._write_chunk(_sse(event)):
                return
        if fail_after is not None and fail_after >= len(events):
            self._fail_stream(outcome)
            return
        self._write_chunk(b"")  # the last chunk of a chunked body: the stream is complete

    def _fail_stream(self, outcome: Reply) -> None:
        """End a started stream the way ``outcome`` says: error event, stall, or drop."""
        if outcome.midstream_status is not None:
            status = outcome.midstream_status
            if self._write_chunk(_sse(error_body(status, outcome.retry_delay))):
                self._write_chunk(b"")
            return
        if outcome.midstream_hang and not self._pause(HANG_SECONDS):
            return
        self._drop()

    def _write_chunk(self, data: bytes) -> bool:
        """Write one HTTP chunk (empty: the terminating one); False if the client is gone."""
        if self._peer_closed():
            self._client_left()
            return False
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        except OSError:  # BrokenPipe, ConnectionReset: the client went away
            self._client_left()
            return False
        return True

    def _pause(self, seconds: float) -> bool:
        """Wait ``seconds``, watching the client; False if it went away or the server stops."""
        fake = self.server.fake
        end = time.monotonic() + seconds
        while True:
            if fake._stopping.is_set():
                self.close_connection = True
                return False
            if self._peer_closed():
                self._client_left()
                return False
            left = end - time.monotonic()
            if left <= 0:
                return True
            fake._stopping.wait(min(left, _POLL_SECONDS))

    def _peer_closed(self) -> bool:
        """True when the client closed its end (the socket reads EOF without blocking)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _client_left(self) -> None:
        self.close_connection = True
        self.server.fake._count_disconnect()

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True  # the client gave up (its timeout); nothing to do

    def _drop(self) -> None:
        """Close the connection without a response, as a crashed front end would."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class FakeGemini(Running):
    """A scripted Gemini API on 127.0.0.1 in a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._scripts: dict[str, deque[Reply | str]] = {}
        self._default: Reply | str = Reply()
        self._failure_rate = 0.0
        self._rng = random.Random(0)
        self._latency = 0.0
        self._stream_chunks = DEFAULT_STREAM_CHUNKS
        self._first_chunk_delay = 0.0
        self._chunk_delay = 0.0
        self._midstream_rate = 0.0
        self._midstream_rng = random.Random(0)
        self._disconnects = 0
        self._embedded: Counter[str] = Counter()
        self._quota: tuple[int, float] | None = None
        self._quota_window: deque[float] = deque()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server = _Server((host, port), _Handler)
        self._server.fake = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL to pass as ``HttpOptions(base_url=...)`` / GEMINI_BASE_URL."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> FakeGemini:
        """Serve in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="fake-gemini",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (``close``)."""
        self.close()

    def close(self) -> None:
        """Stop serving; hung requests are released and open connections closed."""
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()

    # -- scripting -------------------------------------------------------------------------

    def script(self, outcomes: Iterable[Outcome], method: str = "generateContent") -> None:
        """Queue outcomes for the next calls of ``method``; after them, the default applies.

        An outcome is a status code (an error in Google's format, or 200), ``"hang"`` (no
        answer until the server stops), ``"drop"`` (connection closed without a response),
        ``"blocked"`` (a 200 with no candidates), ``answer(text)`` or ``rate_limited(s)``.
        Stream calls (``method=STREAM``) take the same outcomes, which all happen before the
        first chunk, and ``midstream(after=n)``, which fails after n chunks.
        """
        replies = [_normalise(o) for o in outcomes]
        with self._lock:
            self._scripts.setdefault(method, deque()).extend(replies)

    def set_default(self, outcome: Outcome) -> None:
        """The outcome of every call once the script is used up."""
        with self._lock:
            self._default = _normalise(outcome)

    def failure_rate(self, probability: float, seed: int = 0) -> None:
        """Answer unscripted generateContent and stream calls with 503 at this rate (seeded).

        A stream call's 503 comes before its first chunk.
        """
        with self._lock:
            self._failure_rate = probability
            self._rng = random.Random(seed)

    def midstream_failure_rate(self, probability: float, seed: int = 0) -> None:
        """Drop unscripted streams at this rate after a random number of chunks (at least 1)."""
        with self._lock:
            self._midstream_rate = probability
            self._midstream_rng = random.Random(seed)

    def embed_quota(self, requests: int | None, per_seconds: float = 60.0) -> None:
        """Allow ``requests`` batchEmbedContents calls per moving ``per_seconds`` window;
        the calls past it get 429 with the retryDelay until a slot frees (None: no quota)."""
        with self._lock:
            self._quota = None if requests is None else (requests, per_seconds)
            self._quota_window.clear()

    def delay(self, seconds: float) -> None:
        """Add a fixed latency to every model call."""
        self._latency = seconds

    def stream_delays(self, first_chunk: float = 0.0, between_chunks: float = 0.0) -> None:
        """Wait ``first_chunk`` seconds before a stream's first chunk (after its headers and
        the ``delay`` latency) and ``between_chunks`` before each later one."""
        with self._lock:
            self._first_chunk_delay = first_chunk
            self._chunk_delay = between_chunks

    def stream_chunks(self, count: int) -> None:
        """Split streamed answers into at most ``count`` chunks (default 6)."""
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._stream_chunks = count

    def reset(self) -> None:
        """Forget recorded requests and scripts; back to healthy defaults."""
        with self._lock:
            self._requests.clear()
            self._scripts.clear()
            self._default = Reply()
            self._failure_rate = 0.0
            self._latency = 0.0
            self._stream_chunks = DEFAULT_STREAM_CHUNKS
            self._first_chunk_delay = 0.0
            self._chunk_delay = 0.0
            self._midstream_rate = 0.0
            self._disconnects = 0
            self._embedded.clear()
            self._quota = None
            self._quota_window.clear()

    # -- inspection ------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every recorded request, oldest first."""
        with self._lock:
            return list(self._requests)

    def calls(self, method: str = "generateContent") -> list[RecordedRequest]:
        """The recorded requests of one RPC."""
        return [r for r in self.requests if r.method == method]

    @property
    def generate_calls(self) -> int:
        """How many generateContent requests arrived."""
        return len(self.calls("generateContent"))

    @property
    def stream_calls(self) -> int:
        """How many streamGenerateContent requests arrived."""
        return len(self.calls(STREAM))

    @property
    def disconnects(self) -> int:
        """How many stream calls the client left before their last chunk was sent."""
        with self._lock:
            return self._disconnects

    @property
    def embedded_texts(self) -> Counter[str]:
        """How many times each text was sent back embedded (successful replies only)."""
        with self._lock:
            return Counter(self._embedded)

    @property
    def open_connections(self) -> int:
        """Client connections open right now (idle keep-alive ones included)."""
        with self._lock:
            return len(self._connections)

    # -- used by the handler ---------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _next_outcome(self, method: str) -> Reply | str:
        with self._lock:
            queue = self._scripts.get(method)
            if queue:
                return queue.popleft()
            if (
                method in ("generateContent", STREAM)
                and self._failure_rate
                and self._rng.random() < self._failure_rate
            ):
                return Reply(status=503)
            default = self._default
            if (
                method == STREAM
                and self._midstream_rate
                and isinstance(default, Reply)
                and default.status == 200
                and not default.blocked
                and default.midstream_after is None
                and self._midstream_rng.random() < self._midstream_rate
            ):
                after = self._midstream_rng.randint(1, max(1, self._stream_chunks - 1))
                return dataclasses.replace(default, midstream_after=after)
            return default

    def _over_quota(self, method: str) -> Reply | None:
        """A 429 with the wait until the quota frees a slot, or None within the quota."""
        with self._lock:
            if method != "batchEmbedContents" or self._quota is None:
                return None
            limit, window = self._quota
            now = time.monotonic()
            while self._quota_window and self._quota_window[0] <= now - window:
                self._quota_window.popleft()
            if len(self._quota_window) < limit:
                self._quota_window.append(now)
                return None
            wait = self._quota_window[0] + window - now
            return rate_limited(retry_delay=round(max(wait, 0.001), 3))

    def _count_embedded(self, texts: list[str]) -> None:
        with self._lock:
            self._embedded.update(texts)

    def _count_disconnect(self) -> None:
        with self._lock:
            self._disconnects += 1

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


def main(argv: list[str] | None = None) -> None:
    """Run the fake until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--failure-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--first-chunk-delay", type=float, default=0.0)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument("--stream-chunks", type=int, default=DEFAULT_STREAM_CHUNKS)
    parser.add_argument("--midstream-failure-rate", type=float, default=0.0)
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with FakeGemini(args.host, args.port) as fake:
        fake.failure_rate(args.failure_rate, args.seed)
        fake.delay(args.delay)
        fake.stream_delays(args.first_chunk_delay, args.chunk_delay)
        fake.stream_chunks(args.stream_chunks)
        fake.midstream_failure_rate(args.midstream_failure_rate, args.seed)
        print(f"listening on {fake.url}", flush=True)
        while not stop.wait(1.0):
            pass


if __name__ == "__main__":
    main()
