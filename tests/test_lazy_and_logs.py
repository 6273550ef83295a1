"""The lazy-global helper and the request context that feeds the summary log line."""

from __future__ import annotations

import threading
import time

from chatbot.lazy import Lazy
from chatbot.logs import annotate, request_context


def test_lazy_builds_once_however_many_threads_ask_at_once():
    built = []

    def build():
        time.sleep(0.05)  # long enough for every thread to arrive while it builds
        built.append(object())
        return built[-1]

    lazy = Lazy(build)
    barrier = threading.Barrier(8)
    seen = []

    def ask():
        barrier.wait()
        seen.append(lazy.get())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1 and all(value is built[0] for value in seen)
    assert lazy.reset() is built[0] and lazy.get() is not built[0] and len(built) == 2


def test_annotations_reach_only_their_own_request():
    with request_context("req-a", None) as outer:
        annotate(cached=True)
        other: dict = {}

        def elsewhere():  # a new thread starts outside any request: annotate is a no-op
            annotate(retries=9)
            with request_context("req-b", "t" * 32) as inner:
                annotate(retries=1)
                other.update(inner.fields)

        worker = threading.Thread(target=elsewhere)
        worker.start()
        worker.join()
        annotate(retries=0)
    assert outer.fields == {"cached": True, "retries": 0}
    assert other == {"retries": 1}
    annotate(after=True)  # outside every request: nowhere to go, and no error


def test_secrets_are_masked_in_messages_fields_and_stack_traces(capsys):
    import logging

    from chatbot.config import Settings
    from chatbot.logs import configure_logging

    key, token = "AIzaSECRET-0123456789", "t" * 40
    for log_format in ("text", "json"):
        configure_logging(
            Settings.from_env(
                {"LOG_FORMAT": log_format, "GOOGLE_API_KEY": key, "ADMIN_TOKEN": token}
            )
        )
        logger = logging.getLogger("chatbot.test")
        logger.warning("key %s", key, extra={"fields": {"header": f"Bearer {token}"}})
        try:
            raise ValueError(f"request failed with key={key}")
        except ValueError:
            logger.exception("crashed")
        out = capsys.readouterr().out
        assert "[REDACTED]" in out and key not in out and token not in out, log_format
    configure_logging(Settings())
