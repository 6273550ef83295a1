"""Errors that know their HTTP status; the functions map them to JSON in one place.

ChatbotError (500)
├── ClientError (400)                 the request is wrong; the message is safe to show
│   ├── NotFound (404)
│   ├── MethodNotAllowed (405)        carries the allowed methods for the Allow header
│   ├── PayloadTooLarge (413)
│   ├── UnsupportedMediaType (415)
│   ├── Unauthorized (401)
│   ├── Conflict (409)                the target's state forbids it (corrupt snapshot, lost race)
│   ├── RateLimited (429)             carries the limit text and reset time
│   └── Busy (429)                    a one-at-a-time job is running (an insights report)
├── NotReady (503)                    no verified snapshot is being served yet
│   └── SnapshotUnavailable           ... on the public chat function: the reason stays in logs
├── GenerationUnavailable (503)       Gemini stayed down past retries or the deadline
├── GenerationRejected (502)          Gemini refused the request (a 4xx it will not change)
├── ConfigError                       a bad environment variable; stops start-up
└── StorageError                      the bucket could not be read or written
    ├── ObjectNotFound
    └── PreconditionFailed            another writer got there first
SnapshotError                         a snapshot that must not be served (bad sha256,
                                      foreign embedder, unsafe archive member, ...)
"""

from __future__ import annotations

FRIENDLY_GENERATION_ERROR = (
    "I apologize, but I'm having trouble generating a response right now. "
    "Please try again in a moment or contact us at info@romega-solutions.com."
)


class ChatbotError(Exception):
    """Base error: a status code and a message that is safe to show a client."""

    status_code = 500
    public_message = "Internal server error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.public_message)
        self.message = message or self.public_message

    def body(self) -> dict:
        """The JSON body sent to the client."""
        return {"error": self.message, "status": "error"}

    def headers(self) -> dict[str, str]:
        """Extra response headers."""
        return {}


class ClientError(ChatbotError):
    status_code = 400
    public_message = "Bad request"


class NotFound(ClientError):
    status_code = 404
    public_message = "Not found"


class MethodNotAllowed(ClientError):
    status_code = 405

    def __init__(self, method: str, allowed: list[str]) -> None:
        super().__init__(f"Method {method} not allowed; use {', '.join(allowed)}")
        self.allowed = allowed

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)}


class PayloadTooLarge(ClientError):
    status_code = 413
    public_message = "Request body too large"


class UnsupportedMediaType(ClientError):
    status_code = 415
    public_message = "Content-Type must be application/json"


class Unauthorized(ClientError):
    status_code = 401
    public_message = "Missing or invalid X-Admin-Token"


class Conflict(ClientError):
    status_code = 409
    public_message = "Conflict"


class RateLimited(ClientError):
    status_code = 429

    def __init__(self, limit_text: str, retry_after: int, limit_headers: dict[str, str]):
        super().__init__(f"Rate limit exceeded: {limit_text}")
        self.retry_after = retry_after
        self.limit_headers = limit_headers

    def body(self) -> dict:
        return {"error": self.message}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after), **self.limit_headers}


class Busy(ClientError):
    """A job that runs one at a time (an insights report) is running: try again later."""

    status_code = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def body(self) -> dict:
        return {"error": self.message}  # the shape of every 429 (RateLimitError in OpenAPI)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class NotReady(ChatbotError):
    status_code = 503

    def __init__(self, reason: str, retry_after: int = 5) -> None:
        super().__init__(f"Service not ready: {reason}")
        self.reason = reason
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class SnapshotUnavailable(NotReady):
    """This chat instance cannot serve a snapshot yet; the reason is logged, not shown."""

    PUBLIC = "Service not ready: no snapshot can be served yet"

    def body(self) -> dict:
        # The reason may name the bucket or a storage error: for the logs and the operator
        # (admin GET /cache/stats shows refused versions), not for visitors.
        return {"error": self.PUBLIC, "status": "error"}


class GenerationUnavailable(ChatbotError):
    status_code = 503

    def __init__(self, detail: str = "", retry_after: int = 10) -> None:
        super().__init__(FRIENDLY_GENERATION_ERROR)
        self.detail = detail
        self.retry_after = retry_after

    def body(self) -> dict:
        return {"response": FRIENDLY_GENERATION_ERROR, "status": "error"}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class GenerationRejected(ChatbotError):
    """Gemini refused the request (a 4xx other than 408/429): not retried."""

    status_code = 502

    def __init__(self, detail: str = "") -> None:
        super().__init__(FRIENDLY_GENERATION_ERROR)
        self.detail = detail

    def body(self) -> dict:
        return {"response": FRIENDLY_GENERATION_ERROR, "status": "error"}


class ConfigError(ChatbotError):
    """A bad environment variable; the message names it."""


class StorageError(ChatbotError):
    """The snapshot store could not be read or written."""


class ObjectNotFound(StorageError):
    """The named object does not exist."""


class PreconditionFailed(StorageError):
    """A generation precondition failed: another writer changed the object first."""


class SnapshotError(ChatbotError):
    """A snapshot that must not be served; the message says why."""
