"""A fake Gemini REST server that the real google-genai client can be pointed at.

It speaks the Gemini API routes the SDK calls when ``HttpOptions(base_url=...)`` is set:

    POST /v1beta/models/{model}:generateContent
    POST /v1beta/models/{model}:batchEmbedContents   (what ``models.embed_content`` calls)
    POST /v1beta/models/{model}:embedContent

Every request is recorded (path, headers, parsed JSON body). Outcomes can be scripted per
call (``fake.script([503, "drop", answer("hi")])``), drawn at random
(``fake.failure_rate(0.05, seed=1)``) or slowed down (``fake.delay(0.05)``). The default
reply quotes the first sentence of the first passage in the prompt's ``<context>`` block, so
answers are deterministic and grounded in what the caller sent.

Run it alone with ``python -m harness.fake_gemini --port 8765 [--failure-rate 0.05]
[--delay 0.05]``; it prints ``listening on http://127.0.0.1:8765``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import random
import re
import signal
import socket
import threading
from collections import deque
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

FALLBACK_ANSWER = (
    "Romega Solutions can help with that; please contact info@romega-solutions.com for details."
)
HANG_SECONDS = 600.0
DEFAULT_EMBEDDING_DIMENSION = 768

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


def answer(text: str) -> Reply:
    """A 200 whose answer is ``text``."""
    return Reply(text=text)


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
        "answer(text) or rate_limited(seconds)"
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
        outcome = fake._next_outcome(method)
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
            self._send_json(200, self._generation(body, model, outcome))
        elif method == "batchEmbedContents":
            requests = (body or {}).get("requests", [])
            embeddings = [{"values": self._embed(r)} for r in requests]
            self._send_json(200, {"embeddings": embeddings})
        elif method == "embedContent":
            self._send_json(200, {"embedding": {"values": self._embed(body or {})}})
        else:
            self._send_json(404, error_body(404))

    @staticmethod
    def _embed(request: dict[str, Any]) -> list[float]:
        text = " ".join(p.get("text", "") for p in request.get("content", {}).get("parts", []))
        dimension = request.get("outputDimensionality") or DEFAULT_EMBEDDING_DIMENSION
        return fake_embedding(text, int(dimension))

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


class FakeGemini:
    """A scripted Gemini API on 127.0.0.1 in a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._scripts: dict[str, deque[Reply | str]] = {}
        self._default: Reply | str = Reply()
        self._failure_rate = 0.0
        self._rng = random.Random(0)
        self._latency = 0.0
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

    def __enter__(self) -> FakeGemini:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- scripting -------------------------------------------------------------------------

    def script(self, outcomes: Iterable[Outcome], method: str = "generateContent") -> None:
        """Queue outcomes for the next calls of ``method``; after them, the default applies.

        An outcome is a status code (an error in Google's format, or 200), ``"hang"`` (no
        answer until the server stops), ``"drop"`` (connection closed without a response),
        ``"blocked"`` (a 200 with no candidates), ``answer(text)`` or ``rate_limited(s)``.
        """
        replies = [_normalise(o) for o in outcomes]
        with self._lock:
            self._scripts.setdefault(method, deque()).extend(replies)

    def set_default(self, outcome: Outcome) -> None:
        """The outcome of every call once the script is used up."""
        with self._lock:
            self._default = _normalise(outcome)

    def failure_rate(self, probability: float, seed: int = 0) -> None:
        """Answer unscripted generateContent calls with 503 at this rate (seeded, repeatable)."""
        with self._lock:
            self._failure_rate = probability
            self._rng = random.Random(seed)

    def delay(self, seconds: float) -> None:
        """Add a fixed latency to every model call."""
        self._latency = seconds

    def reset(self) -> None:
        """Forget recorded requests and scripts; back to healthy defaults."""
        with self._lock:
            self._requests.clear()
            self._scripts.clear()
            self._default = Reply()
            self._failure_rate = 0.0
            self._latency = 0.0

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
                method == "generateContent"
                and self._failure_rate
                and self._rng.random() < self._failure_rate
            ):
                return Reply(status=503)
            return self._default

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
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with FakeGemini(args.host, args.port) as fake:
        fake.failure_rate(args.failure_rate, args.seed)
        fake.delay(args.delay)
        print(f"listening on {fake.url}", flush=True)
        while not stop.wait(1.0):
            pass


if __name__ == "__main__":
    main()
