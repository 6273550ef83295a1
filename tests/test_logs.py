"""The log formats, the trace header parsing and the secret redaction (chatbot/logs.py).

Each test pins one piece of what Cloud Logging or an operator reads: the JSON keys, the trace
id that joins a line to its request, the masking of secrets in the whole line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import pytest

from chatbot.config import Settings
from chatbot.logs import (
    JsonFormatter,
    TextFormatter,
    configure_logging,
    request_context,
    trace_id_from_headers,
    truncate,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


@pytest.fixture(autouse=True)
def _restore_logging():
    yield
    configure_logging(Settings())


def record(message: str = "hello %s", *args, fields=None, exc_info=None) -> logging.LogRecord:
    rec = logging.LogRecord("chatbot.test", logging.WARNING, __file__, 1, message, args, exc_info)
    if fields is not None:
        rec.fields = fields
    return rec


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"traceparent": f"00-{TRACE}-{SPAN}-01"}, TRACE),
        ({"traceparent": f"  00-{TRACE}-{SPAN}-01  "}, TRACE),
        ({"X-Cloud-Trace-Context": f"{TRACE.upper()}/123;o=1"}, TRACE),
        ({"X-Cloud-Trace-Context": f" {TRACE}/42 "}, TRACE),
        ({"X-Cloud-Trace-Context": TRACE}, TRACE),
        # traceparent wins over the Cloud header when both are well-formed
        ({"traceparent": f"00-{TRACE}-{SPAN}-01", "X-Cloud-Trace-Context": "a" * 32}, TRACE),
        # a malformed traceparent falls back to the Cloud header
        (
            {"traceparent": f"00-{TRACE[:-1]}-{SPAN}-01", "X-Cloud-Trace-Context": "b" * 32},
            "b" * 32,
        ),
        ({"traceparent": f"00-{TRACE.upper()}-{SPAN}-01"}, None),  # W3C ids are lower-case hex
        ({"traceparent": f"00-{TRACE}-{SPAN}"}, None),
        ({"traceparent": f"00-{TRACE}-{SPAN}-01-extra"}, None),
        ({"X-Cloud-Trace-Context": "not-a-trace"}, None),
        ({"X-Cloud-Trace-Context": f"{TRACE}/abc"}, None),
        ({}, None),
    ],
)
def test_trace_id_from_headers(headers, expected):
    assert trace_id_from_headers(headers) == expected


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short question", 80, "short question"),
        ("  spread \n over\tlines  ", 80, "spread over lines"),
        ("a" * 10, 10, "a" * 10),  # exactly at the limit: kept whole
        ("a" * 11, 10, "a" * 7 + "..."),  # one past: cut to the limit, marker included
    ],
)
def test_truncate_keeps_one_line_within_the_limit(text, limit, expected):
    assert truncate(text, limit) == expected


def test_json_lines_carry_the_fields_cloud_logging_reads():
    formatter = JsonFormatter("my-project")
    with request_context("req-1", TRACE):
        entry = json.loads(formatter.format(record("hello %s", "world", fields={"status": 200})))
    assert entry["severity"] == "WARNING"
    assert entry["message"] == "hello world"
    assert entry["logger"] == "chatbot.test"
    assert entry["time"].endswith("+00:00")
    assert entry["request_id"] == "req-1"
    assert entry["logging.googleapis.com/trace"] == f"projects/my-project/traces/{TRACE}"
    assert entry["status"] == 200
    assert "stack_trace" not in entry


def test_json_lines_outside_a_request_or_project():
    entry = json.loads(JsonFormatter(None).format(record()))
    assert "request_id" not in entry and "logging.googleapis.com/trace" not in entry
    with request_context("req-2", TRACE):
        entry = json.loads(JsonFormatter(None).format(record()))
    assert entry["logging.googleapis.com/trace"] == TRACE  # no project: the bare id
    with request_context("req-3", None):
        entry = json.loads(JsonFormatter("p").format(record()))
    assert entry["request_id"] == "req-3" and "logging.googleapis.com/trace" not in entry


def test_json_lines_carry_the_stack_trace():
    try:
        raise ValueError("boom")
    except ValueError:
        entry = json.loads(JsonFormatter(None).format(record(exc_info=sys.exc_info())))
    assert "ValueError: boom" in entry["stack_trace"]


def test_text_lines_append_the_fields_but_not_the_event_name():
    line = TextFormatter().format(
        record("served", fields={"event": "request", "status": 200, "path": "/chat"})
    )
    assert line.endswith(" - chatbot.test - WARNING - served status=200 path=/chat")
    assert TextFormatter().format(record("plain", fields={})).endswith("WARNING - plain")


def test_configure_logging_installs_one_handler_with_the_chosen_format(capsys):
    settings = Settings.from_env({"LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG"})
    configure_logging(settings)
    configure_logging(settings)  # idempotent: still one line per record
    logging.getLogger("chatbot.test").debug("once")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["message"] == "once"
    assert logging.getLogger().level == logging.DEBUG

    configure_logging(Settings.from_env({"LOG_FORMAT": "text", "LOG_LEVEL": "ERROR"}))
    logging.getLogger("chatbot.test").error("as text")
    assert capsys.readouterr().out.rstrip().endswith("ERROR - as text")
    assert logging.getLogger("httpx").level == logging.ERROR  # never below the root's level


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_both_secrets_are_masked_and_the_rest_of_the_line_kept(capsys, log_format):
    key, token = "AIza-key-0123456789", "t0ken" * 8
    configure_logging(
        Settings.from_env({"LOG_FORMAT": log_format, "GOOGLE_API_KEY": key, "ADMIN_TOKEN": token})
    )
    logging.getLogger("chatbot.test").warning("key=%s token=%s end", key, token)
    out = capsys.readouterr().out
    assert key not in out and token not in out
    assert "key=[REDACTED] token=[REDACTED] end" in out


def test_a_four_character_secret_is_masked(capsys):
    configure_logging(Settings.from_env({"GOOGLE_API_KEY": "k3y!"}))
    logging.getLogger("chatbot.test").warning("sent k3y! along")
    assert "sent [REDACTED] along" in capsys.readouterr().out


def test_truncate_defaults_to_80_characters():
    assert truncate("a" * 80) == "a" * 80 and truncate("a" * 81) == "a" * 77 + "..."


def test_json_lines_turn_unusual_field_values_into_text():
    entry = json.loads(JsonFormatter(None).format(record(fields={"path": Path("/tmp/x")})))
    assert entry["path"] == "/tmp/x"


def test_text_lines_start_with_a_second_resolution_timestamp():
    line = TextFormatter().format(record("x"))
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d - chatbot.test - WARNING - x$", line)


def test_configure_logging_keeps_other_handlers_and_the_project_in_traces(capsys):
    other = logging.NullHandler()
    logging.getLogger().addHandler(other)
    try:
        configure_logging(Settings.from_env({"LOG_FORMAT": "json", "GOOGLE_CLOUD_PROJECT": "p1"}))
        assert other in logging.getLogger().handlers
        with request_context("r", TRACE):
            logging.getLogger("chatbot.test").warning("traced")
        entry = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert entry["logging.googleapis.com/trace"] == f"projects/p1/traces/{TRACE}"
    finally:
        logging.getLogger().removeHandler(other)


NOISY = ("chromadb", "httpx", "httpx2", "httpcore", "urllib3", "google_genai", "onnxruntime")


def test_chatty_libraries_are_held_at_warning():
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.NOTSET)
    configure_logging(Settings.from_env({"LOG_LEVEL": "DEBUG"}))
    assert {name: logging.getLogger(name).level for name in NOISY} == dict.fromkeys(
        NOISY, logging.WARNING
    )


def test_the_redis_password_is_masked(capsys):
    configure_logging(Settings.from_env({"REDIS_URL": "redis://:s3cret-pass@10.0.0.3:6379/0"}))
    logging.getLogger("chatbot.test").warning("connecting with s3cret-pass")
    assert "connecting with [REDACTED]" in capsys.readouterr().out
