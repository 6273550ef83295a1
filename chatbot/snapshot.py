"""Snapshots: a Chroma directory packed as .tar.zst with a manifest, and its safe restore.

Bucket layout (keys relative to the store's prefix)::

    snapshots/<version>.tar.zst   immutable archive
    snapshots/<version>.json      its manifest
    LATEST                        the live version's name, written last

Restore = read manifest -> check the embedder -> download -> sha256 and size check ->
extract into a fresh partial directory (no member may escape it) -> rename into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import zstandard

from chatbot.errors import ObjectNotFound, SnapshotError
from chatbot.storage import Storage

LATEST = "LATEST"
SNAPSHOTS = "snapshots"
COMPLETE_MARKER = ".complete"
MAX_UNPACKED_BYTES = 4 << 30
logger = logging.getLogger(__name__)


def archive_key(version: str) -> str:
    return f"{SNAPSHOTS}/{version}.tar.zst"


def manifest_key(version: str) -> str:
    return f"{SNAPSHOTS}/{version}.json"


def valid_version(version: str) -> bool:
    """Versions are plain names: they become object keys and directory names."""
    return (
        0 < len(version) <= 100
        and version.isascii()
        and version[0].isalnum()
        and all(ch.isalnum() or ch in "-_." for ch in version)
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pack(source_dir: Path, dest: Path, level: int = 10) -> dict:
    """Pack a directory into a zstd-compressed tar; returns the manifest's archive entry."""
    raw = 0
    with open(dest, "wb") as out:
        compressor = zstandard.ZstdCompressor(level=level, threads=-1)
        with compressor.stream_writer(out) as zout:
            with tarfile.open(fileobj=zout, mode="w|") as tar:
                for path in sorted(source_dir.rglob("*")):
                    arcname = path.relative_to(source_dir).as_posix()
                    if path.is_file():
                        raw += path.stat().st_size
                    tar.add(path, arcname=arcname, recursive=False)
    return {"sha256": sha256_file(dest), "bytes": dest.stat().st_size, "unpacked_bytes": raw}


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


@dataclass(frozen=True)
class Manifest:
    """What a published snapshot claims to be; checked before anything is served."""

    data: dict

    @property
    def version(self) -> str:
        return self.data["version"]

    @property
    def embedding(self) -> dict:
        return self.data["embedding"]

    @property
    def archive(self) -> dict:
        return self.data["archive"]

    @property
    def chunks(self) -> int:
        return int(self.data["counts"]["chunks"])

    @classmethod
    def parse(cls, raw: bytes, expected_version: str | None = None) -> Manifest:
        try:
            data = json.loads(raw)
            version = data["version"]
            _ = data["embedding"]["model"], data["embedding"]["sha256"]
            _ = data["archive"]["sha256"], int(data["archive"]["bytes"])
            _ = int(data["counts"]["chunks"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SnapshotError(f"manifest is malformed: {exc!r}") from None
        if expected_version is not None and version != expected_version:
            raise SnapshotError(
                f"manifest names version {version!r}, expected {expected_version!r}"
            )
        return cls(data)

    def summary(self) -> dict:
        """The part shown on /health and in admin listings."""
        return {
            "version": self.version,
            "created_at": self.data.get("created_at"),
            "documents": self.data["counts"].get("documents"),
            "chunks": self.chunks,
            "embedding_model": self.embedding["model"],
        }


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


def read_latest(storage: Storage) -> tuple[str, int]:
    """The live version name and the LATEST object's generation."""
    try:
        raw, generation = storage.read(LATEST)
    except ObjectNotFound:
        raise SnapshotError(
            f"no snapshot published at {storage.uri} (LATEST missing): run `python -m indexer run`"
        ) from None
    version = raw.decode("utf-8", "replace").strip()
    if not valid_version(version):
        raise SnapshotError(f"LATEST holds an invalid version name {version[:80]!r}")
    return version, generation


def read_manifest(storage: Storage, version: str) -> Manifest:
    if not valid_version(version):
        raise SnapshotError(f"invalid snapshot version {version[:80]!r}")
    try:
        raw, _ = storage.read(manifest_key(version))
    except ObjectNotFound:
        raise SnapshotError(f"snapshot {version} has no manifest") from None
    return Manifest.parse(raw, expected_version=version)


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
