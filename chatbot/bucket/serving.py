"""The snapshot a chat instance serves: restore and open a version, lease it, dispose of it.

Requests lease the live snapshot for as long as they query it. Loading a new version
restores it beside the live one and swaps it in; the old directory is deleted once no
request holds it (/tmp is RAM on Cloud Functions). A version that fails any check (its
manifest, embedder, archive, extraction limits, opening it or its smoke query; see
chatbot/bucket/restore.py) is refused: remembered with its reason, its directory deleted
(never the live one's or one a draining request still uses), and never tried again
(published snapshots are immutable). Only a storage error is not a refusal: the bucket may
answer next time. Deciding *which* version to load is chatbot/bucket/following.py's job.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from chatbot.bucket.layout import Manifest, read_manifest
from chatbot.bucket.restore import (
    MAX_MEMBERS,
    MAX_UNPACKED_BYTES,
    OpenedIndex,
    check_embedder,
    open_verified,
    restore,
)
from chatbot.bucket.storage import Storage
from chatbot.errors import ObjectNotFound, SnapshotError, SnapshotUnavailable, StorageError

__all__ = ["LiveSnapshot", "OpenedIndex", "SnapshotServer"]  # OpenedIndex: from restore.py
logger = logging.getLogger(__name__)


@dataclass
class LiveSnapshot:
    """An opened snapshot plus the number of requests currently using it."""

    manifest: Manifest
    index: OpenedIndex
    directory: str
    timings: dict
    users: int = 0
    retired: bool = False

    @property
    def version(self) -> str:
        return self.manifest.version


def _rounded(timings: dict[str, float]) -> dict[str, float]:
    return {step: round(seconds, 4) for step, seconds in timings.items()}


class SnapshotServer:
    """Owns the live snapshot and the directories of the versions it restored."""

    def __init__(
        self,
        storage: Storage,
        root: Path,
        *,
        fingerprint: Callable[[], dict],
        open_index: Callable[[Path], OpenedIndex],
        max_unpacked_bytes: int = MAX_UNPACKED_BYTES,
        max_members: int = MAX_MEMBERS,
    ) -> None:
        self.storage = storage
        self.root = root
        self._fingerprint = fingerprint
        self._open_index = open_index
        self.max_unpacked_bytes = max_unpacked_bytes
        self.max_members = max_members
        self._live: LiveSnapshot | None = None
        self._retired: list[LiveSnapshot] = []  # swapped out, not yet disposed of
        self._lock = threading.Lock()  # guards _live, _retired, _loading and the users counts
        self.load_lock = threading.Lock()  # one restore at a time
        self._loading: str | None = None  # directory a restore is filling or reusing
        self.refused: dict[str, str] = {}  # version -> why it must not be served

    @property
    def live(self) -> LiveSnapshot | None:
        return self._live

    @contextmanager
    def lease(self) -> Iterator[LiveSnapshot]:
        """The live snapshot for one request; it is not deleted while leased."""
        with self._lock:
            live = self._live
            if live is None:
                raise SnapshotUnavailable("no snapshot loaded yet")
            live.users += 1
        try:
            yield live
        finally:
            with self._lock:
                live.users -= 1
                drop = live.retired and live.users == 0
            if drop:
                self._dispose(live)

    def wants(self, version: str) -> bool:
        """True when ``version`` is neither live nor refused."""
        live = self._live
        return (live is None or version != live.version) and version not in self.refused

    def load(self, version: str) -> LiveSnapshot:
        """Restore and open ``version``, then make it live; raises on any failure.

        Any failure but a storage error is a SnapshotError that marks the version refused;
        whatever the attempt left in SNAPSHOT_DIR is deleted. Callers hold ``load_lock``.
        """
        if version in self.refused:
            raise SnapshotError(f"snapshot {version} was refused: {self.refused[version]}")
        directory = str(self.root / version)
        with self._lock:
            # A retired copy of this version may still be draining: keep _dispose off it.
            self._loading = directory
        try:
            live = self._open(version)
        except StorageError:  # the bucket may answer next time: not a refusal
            self._failed(directory, version)
            raise
        except SnapshotError as exc:
            self._failed(directory, version, exc)
            raise
        except Exception as exc:  # noqa: BLE001 - whatever breaks on a snapshot refuses it
            logger.error("Loading snapshot %s failed unexpectedly", version, exc_info=True)
            refusal = SnapshotError(f"snapshot {version} cannot be loaded: {exc!r:.300}")
            self._failed(directory, version, refusal)
            raise refusal from exc
        except BaseException:
            self._failed(directory, version)
            raise
        with self._lock:  # the swap and the end of loading are one step for _dispose
            self._loading = None
            old, self._live = self._live, live
            drop = False
            if old is not None:
                old.retired = True
                drop = old.users == 0
                self._retired.append(old)
        logger.info(
            "Serving snapshot %s (%d chunks)%s",
            version,
            live.manifest.chunks,
            f", replacing {old.version}" if old else "",
            extra={"fields": {"restore_seconds": _rounded(live.timings)}},
        )
        if old is not None and drop:
            self._dispose(old)
        return live

    def _open(self, version: str) -> LiveSnapshot:
        manifest = read_manifest(self.storage, version)
        check_embedder(manifest, self._fingerprint())
        try:
            restored = restore(
                self.storage,
                manifest,
                self.root,
                max_bytes=self.max_unpacked_bytes,
                max_members=self.max_members,
            )
        except ObjectNotFound:
            raise SnapshotError(f"snapshot {version} has a manifest but no archive") from None
        index = open_verified(restored.path, manifest, self._open_index)
        return LiveSnapshot(manifest, index, str(restored.path.parent), restored.timings)

    def _in_use(self) -> set[str | None]:
        """Directories that must stay: the live one, one being loaded, ones still leased.

        Callers hold ``_lock``.
        """
        draining = {r.directory for r in self._retired if r.users > 0}
        return {self._live.directory if self._live else None, self._loading, *draining}

    def _remove(self, directory: str) -> bool:
        """Delete ``directory`` unless it is in use; False when it was kept or not there."""
        with self._lock:
            if directory in self._in_use():
                return False
            # Renamed under the lock, so a restore of the same version either finds the
            # directory complete or not at all, never half deleted.
            trash = os.path.join(
                os.path.dirname(directory),
                f".retired-{os.path.basename(directory)}-{uuid.uuid4().hex[:8]}",
            )
            try:
                os.rename(directory, trash)
            except OSError:  # gone already, or it cannot be moved: never delete it in place
                return False
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def _failed(self, directory: str, version: str, refusal: SnapshotError | None = None) -> None:
        """After a failed load: refuse the version if told to, delete what it left behind."""
        with self._lock:
            self._loading = None
        if refusal is not None:
            self.refused[version] = str(refusal)
            logger.error("Refused snapshot %s: %s", version, refusal)
        if self._remove(directory):  # never the live directory or one a request still uses
            logger.info("Deleted the directory of snapshot %s, which failed to load", version)

    def _dispose(self, live: LiveSnapshot) -> None:
        """Close a retired snapshot and delete its directory unless it is (again) in use."""
        try:
            live.index.close()
        except Exception:  # noqa: BLE001 - a failed close must not keep the files forever
            logger.exception("Closing retired snapshot %s failed", live.version)
        with self._lock:
            self._retired = [r for r in self._retired if r is not live]
        # Rolled back to it meanwhile, or another copy of it still drains: the files stay.
        if self._remove(live.directory):
            logger.info("Deleted retired snapshot %s", live.version)

    def status(self) -> dict:
        """What /health shows of the served snapshot (version None until one is loaded)."""
        live = self._live
        out: dict = {"uri": self.storage.uri}
        if live is not None:
            out.update(live.manifest.summary())
            out["restore_seconds"] = _rounded(live.timings)
        else:
            out["version"] = None
        if self.refused:
            out["refused"] = dict(self.refused)
        return out
