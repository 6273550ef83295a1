"""Logging: the seed's text format locally, Cloud Logging JSON on Cloud Functions.

Each request sets a context (request id, trace) that every line logged while serving it
carries; secrets named in the settings are masked in every line as a last line of defence.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from chatbot.config import redis_password

TEXT_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
TEXT_DATEFMT = "%Y-%m-%d %H:%M:%S"

_request: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "request", default=None
)
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_CLOUD_TRACE = re.compile(r"^([0-9a-fA-F]{32})(?:/(\d+))?(?:;o=\d)?$")


def trace_id_from_headers(headers) -> str | None:
    """The trace id from W3C ``traceparent`` or ``X-Cloud-Trace-Context``, if well-formed."""
    if m := _TRACEPARENT.match((headers.get("traceparent") or "").strip()):
        return m.group(1)
    if m := _CLOUD_TRACE.match((headers.get("X-Cloud-Trace-Context") or "").strip()):
        return m.group(1).lower()
    return None


@dataclass
class RequestContext:
    """One request's identity and the fields its summary log line reports."""

    request_id: str
    trace: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


def request_context(request_id: str, trace: str | None) -> AbstractContextManager[RequestContext]:
    """Every line logged inside carries ``request_id`` and ``trace``; ``annotate`` fills fields."""
    return resumed(RequestContext(request_id, trace))


@contextmanager
def resumed(context: RequestContext) -> Iterator[RequestContext]:
    """Enter a request's context again, e.g. while its streamed response is being sent."""
    token = _request.set(context)
    try:
        yield context
    finally:
        _request.reset(token)


def annotate(**fields: Any) -> None:
    """Add fields to the current request's summary log line (no-op outside a request).

    Any layer may call it (the service its timings, the retry policy its retries); the
    router reads the fields once, when it writes the line.
    """
    context = _request.get()
    if context is not None:
        context.fields.update(fields)


def truncate(text: str, limit: int = 80) -> str:
    """Shorten a visitor's question for the logs, one line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class _Redacting(logging.Formatter):
    """Another formatter's whole line with the configured secrets masked: the message, the
    summary fields and stack traces alike."""

    def __init__(self, inner: logging.Formatter, secrets: list[str | None]) -> None:
        super().__init__()
        self.inner = inner
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def format(self, record: logging.LogRecord) -> str:
        line = self.inner.format(record)
        for secret in self.secrets:
            line = line.replace(secret, "[REDACTED]")
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line, with the fields Cloud Logging understands."""

    def __init__(self, project_id: str | None) -> None:
        super().__init__()
        self.project_id = project_id

    def format(self, record: logging.LogRecord) -> str:
        entry: dict = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
        }
        context = _request.get()
        if context is not None:
            entry["request_id"] = context.request_id
        if context is not None and context.trace:
            trace = context.trace
            entry["logging.googleapis.com/trace"] = (
                f"projects/{self.project_id}/traces/{trace}" if self.project_id else trace
            )
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT, TEXT_DATEFMT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items() if k != "event")
        return line


_HANDLER_FLAG = "_romega_handler"


def configure_logging(settings) -> None:
    """Install one stdout handler on the root logger (idempotent: replaces ours)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_FLAG, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    setattr(handler, _HANDLER_FLAG, True)
    formatter = (
        JsonFormatter(settings.project_id) if settings.log_format == "json" else TextFormatter()
    )
    secrets = [settings.google_api_key, settings.admin_token, redis_password(settings.redis_url)]
    handler.setFormatter(_Redacting(formatter, secrets))
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    for noisy in (
        "chromadb",
        "httpx",
        "httpx2",
        "httpcore",
        "urllib3",
        "google_genai",
        "onnxruntime",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
