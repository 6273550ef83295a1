"""The snapshot a chat instance serves, and how it follows the bucket without a restart.

On the first request the instance restores LATEST (bounded retries; a failure is reported as
503 with the reason, and retried by later requests). Afterwards, at most every
CONTROL_POLL_SECONDS, a background thread started by a request reads LATEST and the cache
epoch, restores a new snapshot beside the live one and swaps it in; the old directory is
deleted once no request holds it (/tmp is RAM on Cloud Functions). At most every
HEARTBEAT_SECONDS it writes this instance's heartbeat. None of it blocks or fails a visitor:
a storage error during a poll is logged and the next poll tries again.

Polls are started by requests (any route that touches the service), not by a timer: Cloud
Functions gives an instance CPU only while it serves, so an idle instance catches up on its
next request.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from chatbot.config import Settings
from chatbot.control import EPOCH_KEY, INSTANCES_PREFIX, MalformedEpoch, read_epoch, write_heartbeat
from chatbot.errors import NotReady, ObjectNotFound, SnapshotError, StorageError
from chatbot.index import KnowledgeIndex
from chatbot.logs import truncate
from chatbot.snapshot import Manifest, check_embedder, read_latest, read_manifest, restore
from chatbot.storage import Storage

__all__ = [
    "COLD_START_ATTEMPTS",
    "COLD_START_BACKOFF",
    "EPOCH_KEY",  # re-exported: the control objects' keys live in chatbot/control.py
    "INSTANCES_PREFIX",
    "STORAGE_RETRY_SECONDS",
    "ControlState",
    "LiveSnapshot",
    "SnapshotManager",
]
COLD_START_ATTEMPTS = 3
COLD_START_BACKOFF = 1.0  # after a failed cold start, requests get the 503 at once this long
# The Cloud Storage client's own retries of one call; the cold start and the poll retry on
# top of it, so a storage outage costs a visitor seconds, not the client's default 2 minutes.
STORAGE_RETRY_SECONDS = 5.0
logger = logging.getLogger(__name__)


@dataclass
class LiveSnapshot:
    """An opened snapshot plus the number of requests currently using it."""

    manifest: Manifest
    index: KnowledgeIndex
    directory: str
    timings: dict
    users: int = 0
    retired: bool = False

    @property
    def version(self) -> str:
        return self.manifest.version


@dataclass
class ControlState:
    epoch: int = 0
    last_poll: float = float("-inf")
    last_heartbeat: float = float("-inf")
    refused: dict[str, str] = field(default_factory=dict)


class SnapshotManager:
    """Owns the live snapshot, the cache epoch and this instance's heartbeat."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        fingerprint: Callable[[], dict],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        stats: Callable[[], dict] | None = None,
        on_epoch_change: Callable[[int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self._fingerprint = fingerprint
        self._clock = clock
        self._sleep = sleep
        self._stats = stats or (lambda: {})
        self._on_epoch_change = on_epoch_change or (lambda epoch: None)
        self.instance_id = settings.instance_id or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._live: LiveSnapshot | None = None
        self._lock = threading.Lock()  # guards _live and users counts
        self._load_lock = threading.Lock()  # one restore at a time
        self._poller: threading.Thread | None = None
        self._loading: str | None = None  # directory a restore is filling or reusing
        self.control = ControlState()
        self.not_ready_reason: str | None = "no snapshot loaded yet"
        self._next_cold_attempt = float("-inf")

    # -- serving -------------------------------------------------------------------------

    @contextmanager
    def lease(self) -> Iterator[LiveSnapshot]:
        """The live snapshot for one request; it is not deleted while leased."""
        live = self._ensure_loaded()
        with self._lock:
            live = self._live or live
            live.users += 1
        try:
            yield live
        finally:
            with self._lock:
                live.users -= 1
                drop = live.retired and live.users == 0
            if drop:
                self._dispose(live)
        self.maybe_poll()

    @property
    def epoch(self) -> int:
        return self.control.epoch

    @property
    def live(self) -> LiveSnapshot | None:
        return self._live

    def _ensure_loaded(self) -> LiveSnapshot:
        live = self._live
        if live is not None:
            return live
        with self._load_lock:
            if self._live is not None:
                return self._live
            if self._clock() < self._next_cold_attempt:
                raise NotReady(self.not_ready_reason or "snapshot unavailable")
            last_error: Exception | None = None
            for attempt in range(COLD_START_ATTEMPTS):
                try:
                    self._read_epoch()
                    version, _ = read_latest(self.storage)
                    self._load(version)
                    assert self._live is not None
                    self.not_ready_reason = None
                    # The cold start just read the epoch and LATEST: that counts as a poll.
                    self.control.last_poll = self._clock()
                    return self._live
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
            if isinstance(last_error, StorageError):
                self.not_ready_reason = (
                    f"cannot read the snapshot store: {truncate(str(last_error), 200)}"
                )
            else:
                self.not_ready_reason = str(last_error)
            self._next_cold_attempt = self._clock() + COLD_START_BACKOFF
            logger.error("No snapshot can be served: %s", last_error)
            raise NotReady(self.not_ready_reason)

    def _load(self, version: str) -> None:
        """Restore and open ``version``, then make it live; raises on any failure."""
        if version in self.control.refused:
            raise SnapshotError(f"snapshot {version} was refused: {self.control.refused[version]}")
        directory = str(self.settings.snapshot_dir / version)
        with self._lock:
            # A retired copy of this version may still be draining: keep _dispose off it.
            self._loading = directory
        try:
            manifest = read_manifest(self.storage, version)
            check_embedder(manifest, self._fingerprint())
            try:
                restored = restore(self.storage, manifest, self.settings.snapshot_dir)
            except ObjectNotFound:
                raise SnapshotError(f"snapshot {version} has a manifest but no archive") from None
            index = KnowledgeIndex(restored.path)
            if index.count != manifest.chunks:
                index.close()
                raise SnapshotError(
                    f"snapshot {version} holds {index.count} chunks, manifest says "
                    f"{manifest.chunks}"
                )
        except SnapshotError as exc:
            self.control.refused[version] = str(exc)
            logger.error("Refused snapshot %s: %s", version, exc)
            with self._lock:
                self._loading = None
            raise
        except BaseException:
            with self._lock:
                self._loading = None
            raise
        live = LiveSnapshot(manifest, index, str(restored.path.parent), restored.timings)
        with self._lock:
            self._loading = None
            old, self._live = self._live, live
            if old is not None:
                old.retired = True
                drop = old.users == 0
            else:
                drop = False
        logger.info(
            "Serving snapshot %s (%d chunks)%s",
            version,
            manifest.chunks,
            f", replacing {old.version}" if old else "",
        )
        if old is not None and drop:
            self._dispose(old)

    def _dispose(self, live: LiveSnapshot) -> None:
        """Close a retired snapshot and delete its directory unless it is (again) in use."""
        try:
            live.index.close()
        except Exception:  # noqa: BLE001 - a failed close must not keep the files forever
            logger.exception("Closing retired snapshot %s failed", live.version)
        with self._lock:
            in_use = {self._live.directory if self._live else None, self._loading}
            if live.directory in in_use:  # rolled back to it meanwhile: the files are live
                return
            # Renamed under the lock, so a restore of the same version either finds the
            # directory complete or not at all, never half deleted.
            trash = os.path.join(
                os.path.dirname(live.directory),
                f".retired-{os.path.basename(live.directory)}-{uuid.uuid4().hex[:8]}",
            )
            try:
                os.rename(live.directory, trash)
            except FileNotFoundError:
                return
            except OSError:
                trash = live.directory
        shutil.rmtree(trash, ignore_errors=True)
        logger.info("Deleted retired snapshot %s", live.version)

    # -- polling the bucket ---------------------------------------------------------------

    def maybe_poll(self) -> None:
        """Start a background poll if the last one is older than CONTROL_POLL_SECONDS."""
        now = self._clock()
        with self._lock:
            if now - self.control.last_poll < self.settings.control_poll_seconds:
                return
            if self._poller is not None and self._poller.is_alive():
                return
            self.control.last_poll = now
            self._poller = threading.Thread(target=self.poll, name="snapshot-poll", daemon=True)
            self._poller.start()

    def poll(self) -> None:
        """One round: cache epoch, LATEST, heartbeat. Errors are logged and retried next round."""
        try:
            self._read_epoch()
        except StorageError as exc:
            logger.warning("Could not read the cache epoch: %s", exc)
        except Exception:  # noqa: BLE001 - the poller must never die silently
            logger.exception("Reading the cache epoch crashed")
        try:
            version, _ = read_latest(self.storage)
            if self._wants(version):
                with self._load_lock:
                    if self._wants(version):  # a cold start may have loaded it meanwhile
                        self._load(version)
        except (SnapshotError, StorageError) as exc:
            logger.warning("Snapshot poll failed: %s", exc)
        except Exception:  # noqa: BLE001 - the poller must never die silently
            logger.exception("Snapshot poll crashed")
        if self._clock() - self.control.last_heartbeat >= self.settings.heartbeat_seconds:
            self.heartbeat()

    def _wants(self, version: str) -> bool:
        live = self._live
        if live is None:
            return True
        return version != live.version and version not in self.control.refused

    def _read_epoch(self) -> None:
        try:
            epoch, _ = read_epoch(self.storage)
        except MalformedEpoch as exc:
            logger.warning("Ignoring the cache epoch: %s", exc)
            return
        if epoch != self.control.epoch:
            logger.info(
                "Cache epoch moved %d -> %d: dropping cached answers", self.control.epoch, epoch
            )
            self.control.epoch = epoch
            self._on_epoch_change(epoch)

    def heartbeat(self) -> None:
        """Write this instance's stats for the admin function's fleet view."""
        self.control.last_heartbeat = self._clock()
        live = self._live
        body = {
            "instance_id": self.instance_id,
            "snapshot": live.version if live else None,
            "epoch": self.control.epoch,
            "cache": self._stats(),
            "refused": dict(self.control.refused),
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "written_at_epoch_s": time.time(),
        }
        try:
            write_heartbeat(self.storage, self.instance_id, body)
        except StorageError as exc:
            logger.warning("Could not write the heartbeat: %s", exc)

    def status(self) -> dict:
        """The snapshot part of /health."""
        live = self._live
        out: dict = {"uri": self.storage.uri, "epoch": self.control.epoch}
        if live is not None:
            out.update(live.manifest.summary())
            out["restore_seconds"] = {k: round(v, 4) for k, v in live.timings.items()}
        else:
            out["version"] = None
        if self.control.refused:
            out["refused"] = dict(self.control.refused)
        return out
