"""Restoring a published snapshot: verify, extract safely within limits, open and smoke-query.

    read manifest (strictly parsed) -> check the embedder -> check the claimed sizes against
    the caps -> download -> sha256 and size check -> extract into a fresh partial directory
    (no member may escape it; members and written bytes are counted as they are read) ->
    rename into place -> open (``open_verified``: HNSW files, chunk count, smoke query)

A complete copy of the same archive already on disk (a warm restart, a rollback to a
draining version) is reused instead of downloaded again.

Limits. /tmp is RAM on Cloud Functions, and whoever can write the bucket controls the
archive *and* its manifest, so extraction trusts neither the manifest nor the tar headers:
it counts the bytes it actually writes and stops as soon as they pass the manifest's
``archive.unpacked_bytes`` (the indexer records the sum of the files' sizes) or the hard cap
``MAX_UNPACKED_BYTES``, or the members pass ``MAX_MEMBERS``; then everything written is
removed. A real snapshot is a few files (chroma.sqlite3 and one HNSW segment directory) of
about 8 KiB per chunk: 78 MiB at 10k chunks, 390 MiB at 50k (docs/benchmarks.md). Both caps
are parameters (of ``safe_extract``, ``restore``, ``SnapshotServer`` and ``activate``) with
these constants as defaults, so tests can use small ones.

(Over 300 lines on purpose: every check a restore makes before a snapshot may be served,
the extraction limits counted as bytes are written among them, is kept in one place.)
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

import zstandard

from chatbot.bucket.hnsw import check_hnsw_segments
from chatbot.bucket.layout import Manifest, archive_key, sha256_file
from chatbot.bucket.storage import Storage
from chatbot.errors import SnapshotError

__all__ = [
    "COMPLETE_MARKER",
    "MAX_MEMBERS",
    "MAX_UNPACKED_BYTES",
    "OpenedIndex",
    "Restored",
    "check_archive",
    "check_embedder",
    "check_limits",
    "is_complete",
    "open_verified",
    "restore",
    "safe_extract",
]
COMPLETE_MARKER = ".complete"
# Hard caps on what any archive may extract to, whatever its manifest claims. Above the
# largest snapshot measured (390 MiB at 50k chunks, docs/benchmarks.md), below what a chat
# instance can hold in /tmp next to the process (chat_memory, 1 GiB by default): raise it
# only together with chat_memory.
MAX_UNPACKED_BYTES = 512 << 20
# What must match between a snapshot's embedder and the one querying it (a field one of
# them lacks, like a hosted model's tokenizer, matches only if the other lacks it too).
EMBEDDER_FIELDS = (
    "backend",
    "model",
    "sha256",
    "dimension",
    "tokenizer_sha256",
    "max_tokens",
    "pooling",
)
MAX_MEMBERS = 1000  # files and directories; a real snapshot has under 10
# Tar headers, padding and end blocks read besides the files' bytes: at most this much per
# member, plus a little. Bounds what tarfile itself buffers (a pax header is read whole).
_HEADER_ALLOWANCE = 4096
_COPY_BLOCK = 1 << 20
logger = logging.getLogger(__name__)


class OpenedIndex(Protocol):
    """What serving needs of an opened snapshot (chatbot.answering.retrieval.KnowledgeIndex)."""

    count: int

    def smoke_query(self) -> None:
        """Query the index with a vector stored in it; SnapshotError if it does not work."""
        ...

    def close(self) -> None: ...


# -- extraction -------------------------------------------------------------------------------


def _check_member(member: tarfile.TarInfo) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts or member.name.startswith(("/", "\\")):
        raise SnapshotError(f"archive member {member.name!r} would escape the snapshot directory")
    # Plain files and directories only: no links, devices, or sparse files (whose size on
    # disk is not what the archive carries).
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE):
        raise SnapshotError(f"archive member {member.name!r} is not a regular file or directory")


class _CountingReader:
    """The decompressed stream, refusing to yield more than ``limit`` bytes in all."""

    def __init__(self, raw, limit: int) -> None:
        self._raw = raw
        self._limit = limit
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = _COPY_BLOCK
        data = self._raw.read(min(size, self._limit - self.read_bytes + 1))
        self.read_bytes += len(data)
        if self.read_bytes > self._limit:
            raise SnapshotError(
                f"archive decompresses to more than {self._limit} bytes of tar stream"
            )
        return data


def safe_extract(
    archive: Path,
    dest: Path,
    max_bytes: int = MAX_UNPACKED_BYTES,
    max_members: int = MAX_MEMBERS,
    *,
    expected_bytes: int | None = None,
) -> None:
    """Extract a .tar.zst into ``dest``; an unsafe member or a passed limit aborts it all.

    Members are counted as they are read and files' bytes as they are written, so neither a
    member header nor the manifest is trusted: the extraction stops as soon as more than
    ``max_members`` members, or more than ``min(expected_bytes, max_bytes)`` bytes, have
    come out, and everything written under ``dest`` is removed. ``expected_bytes`` (the
    manifest's ``archive.unpacked_bytes``) must also match what was written, exactly.
    """
    limit = max_bytes if expected_bytes is None else min(expected_bytes, max_bytes)
    created = not dest.exists()
    try:
        written = _extract(archive, dest, limit, max_members)
        if expected_bytes is not None and written != expected_bytes:
            raise SnapshotError(
                f"archive unpacks to {written} bytes, its manifest says {expected_bytes}"
            )
    except BaseException:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        raise


def _extract(archive: Path, dest: Path, limit: int, max_members: int) -> int:
    """The extraction loop of ``safe_extract``; returns the files' bytes written."""
    written = members = 0
    stream_limit = limit + (max_members + 1) * _HEADER_ALLOWANCE + 2 * tarfile.RECORDSIZE
    try:
        dest.mkdir(parents=True, exist_ok=True)
        with open(archive, "rb") as fh:
            reader = _CountingReader(zstandard.ZstdDecompressor().stream_reader(fh), stream_limit)
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                for member in tar:
                    members += 1
                    if members > max_members:
                        raise SnapshotError(f"archive holds more than {max_members} members")
                    _check_member(member)
                    target = dest.joinpath(*PurePosixPath(member.name).parts)
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    source = tar.extractfile(member)
                    if source is None:  # pragma: no cover - regular files always have data
                        raise SnapshotError(f"archive member {member.name!r} has no data")
                    with open(target, "xb") as out:  # a duplicate member is refused
                        while block := source.read(_COPY_BLOCK):
                            written += len(block)
                            if written > limit:
                                raise SnapshotError(
                                    f"archive unpacks to more than {limit} bytes "
                                    f"(stopped at member {member.name!r})"
                                )
                            out.write(block)
    except SnapshotError:
        raise
    except FileExistsError as exc:
        raise SnapshotError(f"archive holds a member twice: {exc.filename}") from None
    except (tarfile.TarError, zstandard.ZstdError, EOFError, OSError, ValueError) as exc:
        raise SnapshotError(f"archive is corrupt or truncated: {exc}") from exc
    return written


# -- checks -----------------------------------------------------------------------------------


def check_embedder(manifest: Manifest, fingerprint: dict, *, user: str = "this instance") -> None:
    """Refuse a snapshot whose vectors came from another embedding model than ``user``'s."""
    built = manifest.embedding
    for field in EMBEDDER_FIELDS:
        if built.get(field) != fingerprint.get(field):
            raise SnapshotError(
                f"snapshot {manifest.version} was built with embedding {field} "
                f"{built.get(field)!r}, {user} uses {fingerprint.get(field)!r}; "
                "rebuild the snapshot with the same EMBEDDING_BACKEND"
            )


def check_limits(manifest: Manifest, max_bytes: int = MAX_UNPACKED_BYTES) -> None:
    """Refuse, before downloading, a snapshot whose manifest claims more than the cap."""
    for what, claimed in (
        ("unpacks to", manifest.unpacked_bytes),
        ("is an archive of", int(manifest.archive["bytes"])),
    ):
        if claimed > max_bytes:
            raise SnapshotError(
                f"snapshot {manifest.version} {what} {claimed} bytes, more than the "
                f"{max_bytes} bytes a snapshot may take"
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


def open_verified(
    path: Path, manifest: Manifest, open_index: Callable[[Path], OpenedIndex]
) -> OpenedIndex:
    """Open an extracted snapshot, check its chunk count and run a smoke query.

    Its HNSW files are checked first (``bucket/hnsw.py``): Chroma's native loader trusts
    them, and a corrupt one can crash the process instead of raising. Whatever else goes
    wrong (Chroma raises its own errors on other corruption) is a SnapshotError naming the
    snapshot; the index is closed again on failure.
    """
    version = manifest.version
    try:
        # Before any native code reads them: a corrupt HNSW file can crash the process.
        check_hnsw_segments(path, int(manifest.embedding["dimension"]), MAX_UNPACKED_BYTES)
    except SnapshotError as exc:
        raise SnapshotError(f"snapshot {version} cannot be opened: {exc}") from None
    except OSError as exc:
        raise SnapshotError(f"snapshot {version} cannot be opened: {exc!r:.300}") from exc
    try:
        index = open_index(path)
    except SnapshotError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to open is a refusal
        raise SnapshotError(f"snapshot {version} cannot be opened: {exc!r:.300}") from exc
    try:
        if index.count != manifest.chunks:
            raise SnapshotError(
                f"snapshot {version} holds {index.count} chunks, manifest says {manifest.chunks}"
            )
        index.smoke_query()
    except BaseException as exc:
        try:
            index.close()
        except Exception:  # noqa: BLE001 - the refusal matters more than the close
            logger.warning("Closing refused snapshot %s failed", version, exc_info=True)
        if isinstance(exc, SnapshotError) or not isinstance(exc, Exception):
            raise
        raise SnapshotError(f"snapshot {version} fails its smoke query: {exc!r:.300}") from exc
    return index


# -- restore ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Restored:
    """A verified snapshot extracted on local disk."""

    manifest: Manifest
    path: Path
    timings: dict[str, float]


def is_complete(directory: Path, manifest: Manifest) -> bool:
    """True when ``directory`` holds a finished extraction of exactly this archive."""
    marker = directory / COMPLETE_MARKER
    try:
        return marker.is_file() and marker.read_text().strip() == manifest.archive["sha256"]
    except (OSError, ValueError):  # unreadable, or not text: not a marker we wrote
        return False


def restore(
    storage: Storage,
    manifest: Manifest,
    root: Path,
    *,
    max_bytes: int = MAX_UNPACKED_BYTES,
    max_members: int = MAX_MEMBERS,
) -> Restored:
    """Download, verify and extract a snapshot under ``root/<version>``; reuses a complete one.

    Nothing is left under ``root`` when it fails (the partial directory is removed).
    """
    timings: dict[str, float] = {}
    final = root / manifest.version
    if is_complete(final, manifest):
        return Restored(manifest, final / "chroma", {"reused": 1.0})
    check_limits(manifest, max_bytes)
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{manifest.version}.", dir=root))
    try:
        archive = work / "snapshot.tar.zst"
        logger.info(
            "Downloading snapshot %s (%d bytes)", manifest.version, manifest.archive["bytes"]
        )
        t0 = time.perf_counter()
        storage.download(archive_key(manifest.version), archive)
        t1 = time.perf_counter()
        check_archive(archive, manifest)
        t2 = time.perf_counter()
        staged = work / "version"
        safe_extract(
            archive,
            staged / "chroma",
            max_bytes,
            max_members,
            expected_bytes=manifest.unpacked_bytes,
        )
        archive.unlink()
        (staged / COMPLETE_MARKER).write_text(manifest.archive["sha256"])
        t3 = time.perf_counter()
        try:
            os.rename(staged, final)
        except OSError:
            # Another process sharing SNAPSHOT_DIR finished the same version first: use theirs.
            if not is_complete(final, manifest):
                raise SnapshotError(
                    f"{final} exists and is not a complete copy of the snapshot"
                ) from None
        timings.update(download=t1 - t0, verify=t2 - t1, extract=t3 - t2)
        return Restored(manifest, final / "chroma", timings)
    finally:
        shutil.rmtree(work, ignore_errors=True)
