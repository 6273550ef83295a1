"""Restoring a published snapshot on a chat instance: verify, then extract safely.

    read manifest -> check the embedder -> download -> sha256 and size check ->
    extract into a fresh partial directory (no member may escape it) -> rename into place

A complete copy of the same archive already on disk (a warm restart, a rollback to a
draining version) is reused instead of downloaded again.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import zstandard

from chatbot.bucket.layout import Manifest, archive_key, sha256_file
from chatbot.bucket.storage import Storage
from chatbot.errors import SnapshotError

COMPLETE_MARKER = ".complete"
MAX_UNPACKED_BYTES = 4 << 30
logger = logging.getLogger(__name__)


def _check_member(member: tarfile.TarInfo) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts or member.name.startswith(("/", "\\")):
        raise SnapshotError(f"archive member {member.name!r} would escape the snapshot directory")
    if not (member.isfile() or member.isdir()):
        raise SnapshotError(f"archive member {member.name!r} is not a regular file or directory")


def safe_extract(archive: Path, dest: Path, max_bytes: int = MAX_UNPACKED_BYTES) -> None:
    """Extract a .tar.zst into ``dest``; any unsafe or oversized member aborts the whole thing."""
    total = 0
    try:
        with open(archive, "rb") as fh:
            reader = zstandard.ZstdDecompressor().stream_reader(fh)
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                for member in tar:
                    _check_member(member)
                    total += member.size
                    if total > max_bytes:
                        raise SnapshotError(f"archive unpacks to more than {max_bytes} bytes")
                    tar.extract(member, dest, filter="data")
    except (tarfile.TarError, zstandard.ZstdError, EOFError, OSError) as exc:
        raise SnapshotError(f"archive is corrupt or truncated: {exc}") from exc


def check_embedder(manifest: Manifest, fingerprint: dict) -> None:
    """Refuse a snapshot whose vectors came from another embedding model."""
    built = manifest.embedding
    for field in ("backend", "model", "sha256", "dimension"):
        if built.get(field) != fingerprint.get(field):
            raise SnapshotError(
                f"snapshot {manifest.version} was built with embedding {field} "
                f"{built.get(field)!r}, this instance uses {fingerprint.get(field)!r}; "
                "rebuild the snapshot with the same EMBEDDING_BACKEND"
            )


def check_archive(archive: Path, manifest: Manifest) -> None:
    """Refuse an archive whose size or sha256 differs from what its manifest promises."""
    size = archive.stat().st_size
    digest = sha256_file(archive)
    if size != int(manifest.archive["bytes"]) or digest != manifest.archive["sha256"]:
        raise SnapshotError(
            f"snapshot {manifest.version} failed its integrity check: sha256 {digest[:12]}... "
            f"({size} bytes) does not match the manifest's "
            f"{manifest.archive['sha256'][:12]}... ({manifest.archive['bytes']} bytes)"
        )


@dataclass(frozen=True)
class Restored:
    """A verified snapshot extracted on local disk."""

    manifest: Manifest
    path: Path
    timings: dict[str, float]


def restore(storage: Storage, manifest: Manifest, root: Path) -> Restored:
    """Download, verify and extract a snapshot under ``root/<version>``; reuses a complete one."""
    timings: dict[str, float] = {}
    final = root / manifest.version
    marker = final / COMPLETE_MARKER
    if marker.is_file() and marker.read_text().strip() == manifest.archive["sha256"]:
        return Restored(manifest, final / "chroma", {"reused": 1.0})
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{manifest.version}.", dir=root))
    try:
        archive = work / "snapshot.tar.zst"
        t0 = time.perf_counter()
        storage.download(archive_key(manifest.version), archive)
        t1 = time.perf_counter()
        check_archive(archive, manifest)
        t2 = time.perf_counter()
        staged = work / "version"
        safe_extract(archive, staged / "chroma")
        archive.unlink()
        (staged / COMPLETE_MARKER).write_text(manifest.archive["sha256"])
        t3 = time.perf_counter()
        try:
            os.rename(staged, final)
        except OSError:
            # Another process sharing SNAPSHOT_DIR finished the same version first: use theirs.
            if not (marker.is_file() and marker.read_text().strip() == manifest.archive["sha256"]):
                raise SnapshotError(
                    f"{final} exists and is not a complete copy of the snapshot"
                ) from None
        timings.update(download=t1 - t0, verify=t2 - t1, extract=t3 - t2)
        return Restored(manifest, final / "chroma", timings)
    finally:
        shutil.rmtree(work, ignore_errors=True)
