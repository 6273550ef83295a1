"""Publishing snapshots and moving LATEST between them: the only writers of LATEST.

``publish`` uploads a new snapshot (the indexer), ``activate`` points LATEST at one already
published (the admin function's rollback), ``list_published`` describes what is there. Both
writers replace LATEST under the generation they read, so two of them cannot interleave.
"""

from __future__ import annotations

import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from chatbot.bucket.layout import (
    SNAPSHOTS,
    Manifest,
    archive_key,
    manifest_key,
    read_latest,
    read_manifest,
    valid_version,
    write_latest,
)
from chatbot.bucket.restore import check_archive
from chatbot.bucket.storage import Storage
from chatbot.errors import ObjectNotFound, PreconditionFailed, SnapshotError

__all__ = [
    "Activation",
    "BuiltSnapshot",
    "activate",
    "list_published",
    "publish",
    "verify_published",
]

READ_WORKERS = 8
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltSnapshot:
    """A packed, verified snapshot in a local folder, waiting to be published."""

    manifest: Manifest
    archive: Path

    @classmethod
    def load(cls, path: Path) -> BuiltSnapshot:
        """The snapshot whose archive (``.tar.zst``) or manifest (``.json``) is at ``path``."""
        if path.suffix == ".json":
            manifest_path, archive = path, path.with_suffix(".tar.zst")
        else:
            manifest_path, archive = path.with_suffix("").with_suffix(".json"), path
        return cls(Manifest.parse(manifest_path.read_bytes()), archive)

    def write_manifest(self) -> Path:
        """Write the manifest beside the archive, as ``<version>.json``."""
        path = self.archive.with_name(f"{self.manifest.version}.json")
        path.write_bytes(self.manifest.to_bytes())
        return path


def publish(storage: Storage, built: BuiltSnapshot) -> str:
    """Upload archive and manifest as new objects, then point LATEST at them.

    LATEST is replaced under the generation it had when publishing began, so when two
    publishers race exactly one wins; the loser removes its own objects and fails loudly.
    """
    version = built.manifest.version
    latest_generation = read_latest(storage).generation
    try:
        storage.upload(archive_key(version), built.archive, if_generation_match=0)
    except PreconditionFailed:
        raise SnapshotError(f"snapshot {version} is already published at {storage.uri}") from None
    try:
        storage.write(manifest_key(version), built.manifest.to_bytes(), if_generation_match=0)
        write_latest(storage, version, generation=latest_generation)
    except PreconditionFailed:
        _withdraw(storage, version)
        raise SnapshotError(
            f"another publisher changed {storage.uri}/LATEST while {version} was uploading; "
            "nothing was published: rebuild and try again"
        ) from None
    except BaseException:
        _withdraw(storage, version)
        raise
    logger.info("Published snapshot %s to %s", version, storage.uri)
    return version


def _withdraw(storage: Storage, version: str) -> None:
    storage.delete(archive_key(version))
    storage.delete(manifest_key(version))


@dataclass(frozen=True)
class Activation:
    """The outcome of pointing LATEST at a version."""

    manifest: Manifest
    previous: str | None

    @property
    def version(self) -> str:
        return self.manifest.version


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
    latest = read_latest(storage)
    previous = latest.version
    manifest = verify_published(storage, version)
    if previous != version:
        write_latest(storage, version, generation=latest.generation)
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
