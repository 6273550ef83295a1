"""How a chat instance follows the bucket: the cold start, LATEST, the cache epoch, heartbeats.

On the first request the instance restores LATEST (bounded retries; a failure is a 503, its
reason logged and reported in the heartbeat, and retried by later requests after a short
backoff; a refused version is not restored again, so a bad snapshot costs one restore, not
one per request). Afterwards, the first request after CONTROL_POLL_SECONDS reads the cache
epoch and LATEST's name before it is served (two small reads, waited for at most
CHECK_BUDGET_SECONDS), so a fleet-wide cache clear reaches that very request; loading a new
version and writing this instance's heartbeat (at most every HEARTBEAT_SECONDS) happen
afterwards in the same background thread, off the visitor's path. A storage error during a
check is logged and the next check tries again; it never fails a visitor.

Checks are made by requests, not by a timer: Cloud Functions gives an instance CPU only
while it serves, so an idle instance catches up on its next request (a background poll
would run only after that request was served from the old cache).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from chatbot.bucket.control import MalformedEpoch, read_epoch, write_heartbeat
from chatbot.bucket.layout import read_latest
from chatbot.bucket.serving import SnapshotServer
from chatbot.errors import SnapshotError, SnapshotUnavailable, StorageError
from chatbot.logs import truncate

__all__ = [
    "COLD_START_ATTEMPTS",
    "CHECK_BUDGET_SECONDS",
    "COLD_START_BACKOFF",
    "STORAGE_RETRY_SECONDS",
    "BucketFollower",
]
COLD_START_ATTEMPTS = 3
COLD_START_BACKOFF = 1.0  # after a failed cold start, requests get the 503 at once this long
# The Cloud Storage client's own retries of one call; the cold start and the poll retry on
# top of it, so a storage outage costs a visitor seconds, not the client's default 2 minutes.
STORAGE_RETRY_SECONDS = 5.0
# The longest a request waits for the control check before it is served anyway (the check
# goes on in its thread): two small reads take tens of milliseconds from Cloud Functions.
CHECK_BUDGET_SECONDS = 0.25
logger = logging.getLogger(__name__)


class BucketFollower:
    """Keeps one instance's ``SnapshotServer`` and cache epoch in step with the bucket."""

    def __init__(
        self,
        server: SnapshotServer,
        *,
        poll_seconds: float,
        heartbeat_seconds: float,
        instance_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        stats: Callable[[], dict] | None = None,
        on_epoch_change: Callable[[int], None] | None = None,
    ) -> None:
        self.server = server
        self.storage = server.storage
        self.poll_seconds = poll_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.instance_id = instance_id or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._clock = clock
        self._sleep = sleep
        self._stats = stats or (lambda: {})
        self._on_epoch_change = on_epoch_change or (lambda epoch: None)
        self.epoch = 0
        self._last_poll = float("-inf")
        self._last_heartbeat = float("-inf")
        self._poll_lock = threading.Lock()
        self._poller: threading.Thread | None = None
        self.not_ready_reason = "no snapshot loaded yet"
        self._next_cold_attempt = float("-inf")

    # -- the cold start -------------------------------------------------------------------

    def ensure_ready(self) -> None:
        """Load LATEST if nothing is served yet; SnapshotUnavailable (503) if that fails."""
        if self.server.live is not None:
            return
        with self.server.load_lock:
            if self.server.live is not None:
                return
            if self._clock() < self._next_cold_attempt:
                raise SnapshotUnavailable(self.not_ready_reason)
            last_error: Exception | None = None
            for attempt in range(COLD_START_ATTEMPTS):
                try:
                    self._read_epoch()
                    self.server.load(read_latest(self.storage).require())
                    # The cold start just read the epoch and LATEST: that counts as a poll.
                    self._last_poll = self._clock()
                    return
                except SnapshotError as exc:  # a bad snapshot will not fix itself by retrying
                    last_error = exc
                    break
                except StorageError as exc:
                    last_error = exc
                    logger.warning(
                        "Snapshot store unreachable (attempt %d/%d): %s",
                        attempt + 1,
                        COLD_START_ATTEMPTS,
                        exc,
                    )
                    if attempt + 1 < COLD_START_ATTEMPTS:
                        self._sleep(0.2 * 2**attempt)
                except Exception as exc:  # noqa: BLE001 - a 503 with a backoff, never a 500 loop
                    logger.error("Cold start failed unexpectedly", exc_info=True)
                    last_error = SnapshotError(f"cannot load a snapshot: {exc!r:.300}")
                    break
            if isinstance(last_error, StorageError):
                self.not_ready_reason = (
                    f"cannot read the snapshot store: {truncate(str(last_error), 200)}"
                )
            else:
                self.not_ready_reason = str(last_error)
            self._next_cold_attempt = self._clock() + COLD_START_BACKOFF
            logger.error("No snapshot can be served: %s", last_error)
            raise SnapshotUnavailable(self.not_ready_reason)

    # -- polling --------------------------------------------------------------------------

    def maybe_poll(self) -> None:
        """Once CONTROL_POLL_SECONDS have passed: check the epoch and LATEST before serving.

        Called before a request is served. A thread reads the epoch and LATEST's name, and
        the request waits for that (at most CHECK_BUDGET_SECONDS: a slow bucket delays it
        no more); the same thread then loads a new snapshot and writes the heartbeat.
        """
        now = self._clock()
        with self._poll_lock:
            if now - self._last_poll < self.poll_seconds:
                return
            if self._poller is not None and self._poller.is_alive():
                return
            self._last_poll = now
            checked = threading.Event()
            self._poller = threading.Thread(
                target=self._round, args=(checked,), name="snapshot-poll", daemon=True
            )
            self._poller.start()
        checked.wait(CHECK_BUDGET_SECONDS)

    def _round(self, checked: threading.Event) -> None:
        try:
            wanted = self._check_control()
        finally:
            checked.set()
        self._catch_up(wanted)

    def poll(self) -> None:
        """One whole round at once: cache epoch, LATEST (loaded if new), heartbeat."""
        self._catch_up(self._check_control())

    def _check_control(self) -> str | None:
        """Read the cache epoch and LATEST; the version to load, if LATEST names a new one.

        Errors are logged and retried at the next check.
        """
        try:
            self._read_epoch()
        except StorageError as exc:
            logger.warning("Could not read the cache epoch: %s", exc)
        except Exception:  # noqa: BLE001 - a check must never fail a visitor
            logger.exception("Reading the cache epoch crashed")
        try:
            version = read_latest(self.storage).require()
        except (SnapshotError, StorageError) as exc:
            logger.warning("Snapshot poll failed: %s", exc)
            return None
        except Exception:  # noqa: BLE001 - a check must never fail a visitor
            logger.exception("Snapshot poll crashed")
            return None
        return version if self.server.wants(version) else None

    def _catch_up(self, version: str | None) -> None:
        """Load ``version`` (if any) and write the heartbeat if it is due; never raises."""
        if version is not None:
            try:
                with self.server.load_lock:
                    if self.server.wants(version):  # a cold start may have loaded it meanwhile
                        self.server.load(version)
            except (SnapshotError, StorageError) as exc:
                logger.warning("Snapshot poll failed: %s", exc)
            except Exception:  # noqa: BLE001 - the poller must never die silently
                logger.exception("Snapshot poll crashed")
        if self._clock() - self._last_heartbeat >= self.heartbeat_seconds:
            self.heartbeat()

    def _read_epoch(self) -> None:
        try:
            epoch, _ = read_epoch(self.storage)
        except MalformedEpoch as exc:
            logger.warning("Ignoring the cache epoch: %s", exc)
            return
        if epoch != self.epoch:
            logger.info("Cache epoch moved %d -> %d: dropping cached answers", self.epoch, epoch)
            self.epoch = epoch
            self._on_epoch_change(epoch)

    def heartbeat(self) -> None:
        """Write this instance's stats for the admin function's fleet view."""
        self._last_heartbeat = self._clock()
        live = self.server.live
        try:
            body = {
                "instance_id": self.instance_id,
                "snapshot": live.version if live else None,
                "epoch": self.epoch,
                "cache": self._stats(),
                "refused": dict(self.server.refused),
                "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "written_at_epoch_s": time.time(),
            }
            write_heartbeat(self.storage, self.instance_id, body)
        except StorageError as exc:
            logger.warning("Could not write the heartbeat: %s", exc)
        except Exception:  # noqa: BLE001 - the poller must never die silently
            logger.exception("Writing the heartbeat crashed")
