"""What is published, and moving LATEST between published snapshots (rollback, roll forward).

Shared by the admin function and the indexer, so the admin zip (main.py + chatbot/) needs
nothing from indexer/. Publishing a new snapshot itself lives in indexer/publish.py.
"""

from __future__ import annotations

import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from chatbot.errors import ObjectNotFound, SnapshotError
from chatbot.snapshot import (
    LATEST,
    SNAPSHOTS,
    Manifest,
    archive_key,
    check_archive,
    read_manifest,
    valid_version,
)
from chatbot.storage import Storage

READ_WORKERS = 8
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Activation:
    """The outcome of pointing LATEST at a version."""

    manifest: Manifest
    previous: str | None

    @property
    def version(self) -> str:
        return self.manifest.version


def current_latest(storage: Storage) -> tuple[str | None, int]:
    """LATEST's content (None if missing or unreadable as a name) and its generation (0 if none)."""
    try:
        raw, generation = storage.read(LATEST)
    except ObjectNotFound:
        return None, 0
    name = raw.decode("utf-8", "replace").strip()
    return (name if valid_version(name) else None), generation


def verify_published(storage: Storage, version: str) -> Manifest:
    """Read the manifest, download the archive and check its size and sha256 against it."""
    manifest = read_manifest(storage, version)
    with tempfile.TemporaryDirectory(prefix="romega-verify-") as tmp:
        archive = Path(tmp) / "snapshot.tar.zst"
        try:
            storage.download(archive_key(version), archive)
        except ObjectNotFound:
            raise SnapshotError(f"snapshot {version} has a manifest but no archive") from None
        check_archive(archive, manifest)
    return manifest


def activate(storage: Storage, version: str) -> Activation:
    """Point LATEST at an already-published version once its archive checks out.

    LATEST is replaced under the generation it had before the check, so a publish that
    lands meanwhile is not silently overwritten: PreconditionFailed instead.
    """
    previous, generation = current_latest(storage)
    manifest = verify_published(storage, version)
    if previous != version:
        storage.write(LATEST, f"{version}\n".encode(), if_generation_match=generation)
        logger.info("LATEST moved from %s to %s", previous, version)
    return Activation(manifest, previous)


def _describe(storage: Storage, version: str, archives: set[str]) -> dict:
    entry: dict = {"version": version}
    try:
        manifest = read_manifest(storage, version)
    except SnapshotError as exc:
        return {**entry, "error": str(exc), "archive_present": version in archives}
    return {
        **manifest.summary(),
        "embedding": {k: manifest.embedding.get(k) for k in ("backend", "model", "dimension")},
        "archive_bytes": int(manifest.archive["bytes"]),
        "archive_sha256": manifest.archive["sha256"],
        "archive_present": version in archives,
    }


def list_published(storage: Storage) -> list[dict]:
    """Every version under snapshots/ with its manifest's summary, newest first.

    A version with an archive but no manifest (an interrupted publish) or a malformed
    manifest is listed with an ``error``: it cannot be activated.
    """
    manifests: set[str] = set()
    archives: set[str] = set()
    for key in storage.list(SNAPSHOTS):
        name = key.removeprefix(f"{SNAPSHOTS}/")
        if name.endswith(".json"):
            manifests.add(name.removesuffix(".json"))
        elif name.endswith(".tar.zst"):
            archives.add(name.removesuffix(".tar.zst"))
    versions = sorted(v for v in manifests | archives if valid_version(v))
    if not versions:
        return []
    with ThreadPoolExecutor(max_workers=min(READ_WORKERS, len(versions))) as pool:
        entries = list(pool.map(lambda v: _describe(storage, v, archives), versions))
    entries.sort(key=lambda e: (str(e.get("created_at") or ""), e["version"]), reverse=True)
    return entries
