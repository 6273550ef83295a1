"""The snapshot a chat instance serves: restore and open a version, lease it, dispose of it.

Requests lease the live snapshot for as long as they query it. Loading a new version
restores it beside the live one and swaps it in; the old directory is deleted once no
request holds it (/tmp is RAM on Cloud Functions). A version that fails any check is
refused, remembered with its reason, and never tried again (published snapshots are
immutable). Deciding *which* version to load is chatbot/bucket/following.py's job.
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
from typing import Protocol

from chatbot.bucket.layout import Manifest, read_manifest
from chatbot.bucket.restore import check_embedder, restore
from chatbot.bucket.storage import Storage
from chatbot.errors import NotReady, ObjectNotFound, SnapshotError

__all__ = ["LiveSnapshot", "OpenedIndex", "SnapshotServer"]
logger = logging.getLogger(__name__)


class OpenedIndex(Protocol):
    """What serving needs of an opened snapshot (chatbot.answering.retrieval.KnowledgeIndex)."""

    count: int

    def close(self) -> None: ...


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


class SnapshotServer:
    """Owns the live snapshot and the directories of the versions it restored."""

    def __init__(
        self,
        storage: Storage,
        root: Path,
        *,
        fingerprint: Callable[[], dict],
        open_index: Callable[[Path], OpenedIndex],
    ) -> None:
        self.storage = storage
        self.root = root
        self._fingerprint = fingerprint
        self._open_index = open_index
        self._live: LiveSnapshot | None = None
        self._lock = threading.Lock()  # guards _live, _loading and the users counts
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
                raise NotReady("no snapshot loaded yet")
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

        A SnapshotError also marks the version refused. Callers hold ``load_lock``.
        """
        if version in self.refused:
            raise SnapshotError(f"snapshot {version} was refused: {self.refused[version]}")
        directory = str(self.root / version)
        with self._lock:
            # A retired copy of this version may still be draining: keep _dispose off it.
            self._loading = directory
        try:
            live = self._open(version)
        except BaseException as exc:
            with self._lock:
                self._loading = None
            if isinstance(exc, SnapshotError):
                self.refused[version] = str(exc)
                logger.error("Refused snapshot %s: %s", version, exc)
            raise
        with self._lock:  # the swap and the end of loading are one step for _dispose
            self._loading = None
            old, self._live = self._live, live
            drop = False
            if old is not None:
                old.retired = True
                drop = old.users == 0
        logger.info(
            "Serving snapshot %s (%d chunks)%s",
            version,
            live.manifest.chunks,
            f", replacing {old.version}" if old else "",
        )
        if old is not None and drop:
            self._dispose(old)
        return live

    def _open(self, version: str) -> LiveSnapshot:
        manifest = read_manifest(self.storage, version)
        check_embedder(manifest, self._fingerprint())
        try:
            restored = restore(self.storage, manifest, self.root)
        except ObjectNotFound:
            raise SnapshotError(f"snapshot {version} has a manifest but no archive") from None
        index = self._open_index(restored.path)
        if index.count != manifest.chunks:
            index.close()
            raise SnapshotError(
                f"snapshot {version} holds {index.count} chunks, manifest says {manifest.chunks}"
            )
        return LiveSnapshot(manifest, index, str(restored.path.parent), restored.timings)

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

    def status(self) -> dict:
        """What /health shows of the served snapshot (version None until one is loaded)."""
        live = self._live
        out: dict = {"uri": self.storage.uri}
        if live is not None:
            out.update(live.manifest.summary())
            out["restore_seconds"] = {k: round(v, 4) for k, v in live.timings.items()}
        else:
            out["version"] = None
        if self.refused:
            out["refused"] = dict(self.refused)
        return out
