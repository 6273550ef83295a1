"""What a chat instance records for later analysis: answers, don't-knows and feedback.

Format. Each instance buffers its events in memory and writes them in batches, one object
per batch, under the store's prefix (keys from ``layout.events_key``)::

    events/YYYY/MM/DD/<instance>-<seq>.jsonl

one JSON object a line, each ``{"type": ..., "time": <ISO-8601 UTC>, ...fields}``:

    answer      answer_id, question, standalone_question, sources [{..., score}], generator,
                cached, latency_ms, answer (its text, for insights on down-rated answers)
    dont_know   question
    feedback    answer_id, rating ("up" | "down"), comment (optional)

The date is the UTC date of the flush; ``<instance>`` is the instance id made safe for an
object name (as for heartbeats); ``<seq>`` is zero-padded, so an instance's batches sort in
the order they were written. It starts at the millisecond time the log was created and goes
up by one a batch, and every batch is written with ``if_generation_match=0``: an existing
object is never overwritten (another process with the same id picks the next free number).

Guarantees:

- ``record`` never does I/O on the caller's thread, never blocks on storage and never
  raises: an event that cannot be serialised is logged and dropped.
- Batches are written by a background thread started by ``record`` at most every
  ``flush_seconds`` (EVENTS_FLUSH_SECONDS): Cloud Functions gives an instance CPU only
  while it serves a request, so there is no idle timer. ``close`` writes the rest at
  shutdown (``install_shutdown_flush``).
- A failed write keeps the events for the next flush: delivery is at least once. A write
  whose answer was lost is recognised when the storage client's own retry meets it; one
  that landed after the client gave up is written again with the next batch, so readers
  should de-duplicate by answer_id and type.
- Memory is bounded by ``max_buffered`` events: past it the oldest are dropped and counted,
  with one WARNING per overflow episode.
- Fields whose names say they hold an address, token, key or secret (``client_ip``,
  ``api_key``, ``authorization``, ...) are removed before an event is buffered: no IP
  addresses, tokens or keys are recorded.

(Over 300 lines on purpose: much of it is the shutdown flush, whose reasons under gunicorn
are written down in ``install_shutdown_flush``.)
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from chatbot.bucket.layout import events_key
from chatbot.bucket.storage import Storage
from chatbot.errors import ObjectNotFound, PreconditionFailed, StorageError

__all__ = [
    "ANSWER",
    "DONT_KNOW",
    "FEEDBACK",
    "EventLog",
    "install_shutdown_flush",
]
ANSWER = "answer"
DONT_KNOW = "dont_know"
FEEDBACK = "feedback"
# A batch whose name is taken is retried under the next free number this many times.
NAME_ATTEMPTS = 8
# How long close() waits for a background flush that is already writing.
CLOSE_WAIT_SECONDS = 5.0
# Parts of a field name that mark a value which must never be stored.
_SENSITIVE_PARTS = frozenset(
    {
        "ip",
        "ips",
        "addr",
        "address",
        "forwarded",
        "token",
        "tokens",
        "key",
        "apikey",
        "secret",
        "password",
        "authorization",
        "cookie",
        "cookies",
        "credentials",
    }
)
logger = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _sensitive(name: str) -> bool:
    parts = re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower())
    return any(part in _SENSITIVE_PARTS for part in parts)


class EventLog:
    """One instance's event buffer and its batched writes to the bucket."""

    def __init__(
        self,
        storage: Storage,
        instance_id: str,
        *,
        flush_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utc_now,
        max_buffered: int = 10_000,
    ) -> None:
        if max_buffered < 1:
            raise ValueError("max_buffered must be at least 1")
        self.storage = storage
        self.instance_id = instance_id
        self.flush_seconds = flush_seconds
        self.max_buffered = max_buffered
        self._clock = clock
        self._now = now
        self._init_locks()
        self._buffer: deque[str] = deque()
        self._last_flush = clock()
        self._seq = self._millis()
        self._overflowing = False
        self._refused_fields: set[str] = set()
        self.dropped = 0  # events dropped because the buffer was full
        self.written = 0  # events written to the bucket
        self.objects = 0  # objects written
        self.failed_flushes = 0
        _LOGS.add(self)

    def _init_locks(self) -> None:
        # Reentrant: install_shutdown_flush's SIGTERM handler may run close() on the main
        # thread while that thread is inside record() or flush().
        self._lock = threading.RLock()  # the buffer, the counters and the sequence
        self._flush_lock = threading.RLock()  # one write at a time
        self._flusher: threading.Thread | None = None

    def _millis(self) -> int:
        try:
            return int(self._now().timestamp() * 1000)
        except Exception:  # noqa: BLE001 - a broken clock must not stop the log
            return int(time.time() * 1000)

    @property
    def pending(self) -> int:
        """Events buffered and not yet written."""
        return len(self._buffer)

    # -- the caller's side ----------------------------------------------------------------

    def record(self, kind: str, **fields: Any) -> None:
        """Buffer one event and maybe start a background flush; never blocks, never raises."""
        try:
            for name in [name for name in fields if _sensitive(name)]:
                del fields[name]
                if name not in self._refused_fields:
                    self._refused_fields.add(name)
                    logger.warning("Event field %r is never recorded (it may identify)", name)
            event = {"type": kind, "time": self._now().isoformat(timespec="milliseconds")}
            line = json.dumps({**event, **fields}, default=str, ensure_ascii=False)
            with self._lock:
                self._buffer.append(line)
                self._trim()
            self._maybe_flush()
        except Exception:  # noqa: BLE001 - recording must never fail a visitor's request
            logger.exception("Could not record a %r event; it is dropped", kind)

    def _trim(self) -> None:
        """Drop the oldest events past ``max_buffered`` (the caller holds ``_lock``)."""
        excess = len(self._buffer) - self.max_buffered
        if excess <= 0:
            return
        for _ in range(excess):
            self._buffer.popleft()
        self.dropped += excess
        if not self._overflowing:
            self._overflowing = True
            logger.warning(
                "Event buffer full (%d events): dropping the oldest until a flush succeeds",
                self.max_buffered,
            )

    def _maybe_flush(self) -> None:
        now = self._clock()
        with self._lock:
            if now - self._last_flush < self.flush_seconds:
                return
            if self._flusher is not None and self._flusher.is_alive():
                return
            self._last_flush = now
            self._flusher = threading.Thread(target=self.flush, name="event-flush", daemon=True)
            self._flusher.start()

    # -- writing --------------------------------------------------------------------------

    def flush(self) -> int:
        """Write everything buffered as one object; the number of events written. Never raises."""
        try:
            with self._flush_lock:
                return self._flush()
        except Exception:  # noqa: BLE001 - a flush must never take anything down
            logger.exception("Flushing events crashed")
            return 0

    def close(self, timeout: float = CLOSE_WAIT_SECONDS) -> int:
        """The final flush, at shutdown: waits up to ``timeout`` for a flush in progress."""
        try:
            if not self._flush_lock.acquire(timeout=timeout):
                logger.warning("A flush still running after %ss; flushing beside it", timeout)
                return self._flush()
            try:
                return self._flush()
            finally:
                self._flush_lock.release()
        except Exception:  # noqa: BLE001 - runs at exit; must not raise
            logger.exception("The final event flush crashed")
            return 0

    def _flush(self) -> int:
        with self._lock:
            self._last_flush = self._clock()
            if not self._buffer:
                return 0
            batch = list(self._buffer)
            self._buffer.clear()
        data = ("\n".join(batch) + "\n").encode()
        day = self._now().date()
        for _ in range(NAME_ATTEMPTS):
            with self._lock:
                seq = self._seq
                self._seq += 1
            key = events_key(day, self.instance_id, seq)
            try:
                self.storage.write(key, data, if_generation_match=0)
            except PreconditionFailed:
                if self._already_written(key, data):
                    break
                with self._lock:  # another process with this id: move past its numbers
                    self._seq = max(self._seq, self._millis())
                continue
            except Exception as exc:  # noqa: BLE001 - StorageError or a client's own error
                level = logging.WARNING if isinstance(exc, StorageError) else logging.ERROR
                logger.log(level, "Could not write %d events to %s: %s", len(batch), key, exc)
                self._put_back(batch)
                return 0
            break
        else:
            logger.warning("No free object name for %d events; keeping them", len(batch))
            self._put_back(batch)
            return 0
        with self._lock:
            self.written += len(batch)
            self.objects += 1
            if self._overflowing:
                logger.warning("Event buffer drained; %d events dropped in all", self.dropped)
                self._overflowing = False
        return len(batch)

    def _already_written(self, key: str, data: bytes) -> bool:
        """Whether ``key`` holds exactly ``data``: our own write, retried after a lost answer."""
        try:
            existing, _ = self.storage.read(key)
        except ObjectNotFound:
            return False
        except Exception as exc:  # noqa: BLE001 - unknown: write under another name
            logger.warning("Could not read back %s: %s", key, exc)
            return False
        return existing == data

    def _put_back(self, batch: list[str]) -> None:
        with self._lock:
            self.failed_flushes += 1
            self._buffer.extendleft(reversed(batch))
            self._trim()

    def _after_fork_in_child(self) -> None:
        """A forked worker starts empty: buffered events belong to the parent, which writes
        them; its locks may have been held by a thread that does not exist here."""
        self._init_locks()
        self._buffer = deque()
        self._seq = max(self._seq, self._millis())


_LOGS: weakref.WeakSet[EventLog] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for log in list(_LOGS):
        log._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- shutdown -------------------------------------------------------------------------------

_INSTALLED: set[int] = set()


def install_shutdown_flush(log: EventLog) -> None:
    """Write ``log``'s buffered events when the process exits (call once per log).

    What runs where, with functions-framework 3.10 and gunicorn (27) as the Cloud Function
    runs them (``functions-framework --target ...``, not ``--debug``):

    - The function's ``main.py`` is imported, and the app built, in the gunicorn *arbiter*
      before it forks: ``functions_framework._cli`` calls ``create_app`` (which imports the
      source) and only then starts ``GunicornApplication``, whose ``load()`` returns the
      already built app. The worker is a fork of the arbiter and inherits what the import
      registered, ``atexit`` handlers included. (So nothing I/O-heavy, and no threads, may
      be started at import.)
    - A SIGTERM handler installed at import does nothing: the arbiter installs its own
      handlers when it starts, and the worker resets every signal to SIG_DFL and installs
      its own in ``Worker.init_signals``.
    - On SIGTERM the arbiter closes its sockets and sends SIGTERM to its workers (SIGQUIT
      on SIGINT), waits up to ``graceful_timeout`` (30 s) and then SIGKILLs them. The
      gthread worker's SIGTERM handler only stops its loop; the worker finishes requests
      in flight, returns from ``init_process`` and leaves through ``sys.exit(0)`` in
      ``Arbiter.spawn_worker``, the SystemExit propagating out of the interpreter (SIGQUIT:
      ``sys.exit(0)`` from the handler): the interpreter shuts down normally, so ``atexit``
      handlers run in the worker, after the last request. The arbiter then exits through
      ``sys.exit`` too and runs its own (inherited-from-itself) handlers, with an empty
      buffer: nothing is written twice.
    - Cloud Run sends SIGTERM only to the container's main process (the arbiter), then
      SIGKILL after 10 s: the worker's final flush has those seconds, minus requests in
      flight. A worker killed by SIGKILL (the timeout, or out of memory) loses its buffer.

    So ``atexit`` is what works under gunicorn (checked by tests/test_events.py against a
    real functions-framework process, SIGTERM to the arbiter alone and to the whole group).
    With ``--debug``, werkzeug's reloader sets SIGTERM to ``sys.exit(0)``, so ``atexit``
    runs there too. In addition, when called from the main thread, a SIGTERM handler is
    chained in front of the current one, for processes that keep it (a plain script,
    where SIGTERM's default action would skip ``atexit``): it flushes, then calls the
    previous handler, or with the default one re-delivers SIGTERM so the process still
    dies of it. ``EventLog.close`` is idempotent, so both paths may run.
    """
    if id(log) in _INSTALLED:
        return
    _INSTALLED.add(id(log))
    atexit.register(log.close)
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: Any) -> None:
            log.close()
            if callable(previous):
                previous(signum, frame)
            elif previous != signal.SIG_IGN:  # SIG_DFL (or unknown): die of the signal
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_sigterm)
    except (ValueError, OSError) as exc:  # not the main interpreter, or no signals here
        logger.debug("No SIGTERM flush (%s); relying on atexit", exc)
