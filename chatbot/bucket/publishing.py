"""Publishing snapshots and moving LATEST between them: the only writers of LATEST.

``publish`` uploads a new snapshot (the indexer), ``activate`` points LATEST at one already
published (the admin function's rollback), ``list_published`` describes what is there. Both
writers replace LATEST under the generation they read, so two of them cannot interleave.

``activate`` checks its target as a chat instance would before it moves LATEST (strict
manifest, the embedder of the snapshot LATEST names, sha256 and size, a safe extraction
within the same caps, opening it and a smoke query), so a rollback cannot take the fleet
down: what it refuses, a chat instance would have refused too.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
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
from chatbot.bucket.restore import (
    MAX_MEMBERS,
    MAX_UNPACKED_BYTES,
    OpenedIndex,
    check_archive,
    check_embedder,
    check_limits,
    open_verified,
    safe_extract,
)
from chatbot.bucket.storage import Storage
from chatbot.errors import ObjectNotFound, PreconditionFailed, SnapshotError

__all__ = [
    "Activation",
    "BuiltSnapshot",
    "activate",
    "list_published",
    "publish",
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
    The error raised is always the one that stopped the publish: a failed clean-up (the
    indexer's account may not be allowed to delete) is logged, never raised instead.
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
        left = _withdraw(storage, version)
        raise SnapshotError(
            f"another publisher changed {storage.uri}/LATEST while {version} was uploading; "
            + (
                "nothing was published: rebuild and try again"
                if not left
                else f"LATEST was not changed, but {', '.join(left)} could not be removed "
                "(see the log): rebuild and try again"
            )
        ) from None
    except BaseException:
        _withdraw(storage, version)
        raise
    logger.info("Published snapshot %s to %s", version, storage.uri)
    return version


def _withdraw(storage: Storage, version: str) -> list[str]:
    """Remove a half-published version's objects; returns the keys that could not be removed.

    Never raises: the caller is already failing with the error that matters.
    """
    left = []
    for key in (archive_key(version), manifest_key(version)):
        try:
            storage.delete(key)
        except Exception:  # noqa: BLE001 - logged; the original error is re-raised instead
            logger.error(
                "Could not remove %s/%s after a failed publish", storage.uri, key, exc_info=True
            )
            left.append(key)
    return left


@dataclass(frozen=True)
class Activation:
    """The outcome of pointing LATEST at a version."""

    manifest: Manifest
    previous: str | None

    @property
    def version(self) -> str:
        return self.manifest.version


OpenIndex = Callable[[Path], OpenedIndex]


def _default_open_index() -> OpenIndex:
    # Imported on use: bucket/ does not import answering/ (the admin function passes it).
    from chatbot.answering.retrieval import KnowledgeIndex

    return KnowledgeIndex


def _check_contents(
    storage: Storage,
    manifest: Manifest,
    open_index: OpenIndex,
    max_bytes: int,
    max_members: int,
) -> None:
    """Download, check, extract (in a temporary directory), open and smoke-query a snapshot."""
    version = manifest.version
    check_limits(manifest, max_bytes)
    with tempfile.TemporaryDirectory(prefix="romega-verify-") as tmp:
        archive = Path(tmp) / "snapshot.tar.zst"
        try:
            storage.download(archive_key(version), archive)
        except ObjectNotFound:
            raise SnapshotError(f"snapshot {version} has a manifest but no archive") from None
        check_archive(archive, manifest)
        path = Path(tmp) / "chroma"
        safe_extract(archive, path, max_bytes, max_members, expected_bytes=manifest.unpacked_bytes)
        archive.unlink()
        open_verified(path, manifest, open_index).close()


def _check_same_embedder(storage: Storage, manifest: Manifest, current: str | None) -> None:
    """Refuse a target built with another embedder than the snapshot LATEST names.

    The admin function has no model files to fingerprint; the live snapshot's manifest
    stands for what the chat instances run. With no readable current manifest there is
    nothing to compare with (the chat instances still check their own fingerprint).
    """
    if current is None or current == manifest.version:
        return
    try:
        live = read_manifest(storage, current)
    except SnapshotError as exc:
        logger.warning(
            "Not comparing embedders: LATEST's snapshot %s is unreadable: %s", current, exc
        )
        return
    check_embedder(manifest, live.embedding, user=f"LATEST ({current})")


def activate(
    storage: Storage,
    version: str,
    *,
    open_index: OpenIndex | None = None,
    max_bytes: int = MAX_UNPACKED_BYTES,
    max_members: int = MAX_MEMBERS,
) -> Activation:
    """Point LATEST at an already-published version once it checks out as a chat instance's.

    The manifest is parsed strictly and its embedder must be the one of the snapshot LATEST
    names now; the archive is downloaded and checked against its sha256 and size, extracted
    within the caps into a temporary directory, opened with ``open_index`` (default:
    chatbot.answering.retrieval.KnowledgeIndex) and smoke-queried with a vector read from
    the collection itself. SnapshotError says what is wrong. LATEST is replaced under the
    generation it had before the checks, so a publish that lands meanwhile is not silently
    overwritten: PreconditionFailed instead.
    """
    latest = read_latest(storage)
    previous = latest.version
    manifest = read_manifest(storage, version)
    _check_same_embedder(storage, manifest, previous)
    _check_contents(storage, manifest, open_index or _default_open_index(), max_bytes, max_members)
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
