"""Incremental builds: reuse the vectors of unchanged chunks from the snapshot LATEST names.

Every snapshot carries, inside its archive beside Chroma's files, a chunk-hash file
(``CHUNK_HASHES``): chunk id -> content hash, where the hash covers everything that makes the
stored record (the chunk's id, text, embedding text and whole metadata dict, so a metadata
field added later is covered without a change here) and the embedder's fingerprint. The
manifest names that file and records its sha256 and count (``chunk_hashes``); the list itself
stays out of the manifest, whose parse is capped at 1 MiB (50k chunks need ~3 MiB).

A build (``plan_reuse``) reads LATEST, refuses a snapshot of another embedder, restores the
snapshot exactly as a chat instance does (chatbot/bucket/restore.py: sha256, safe
extraction within the caps), checks the hash file against the manifest, and reads back the
vectors of the chunks whose hash is unchanged. Anything that goes wrong there makes a full
build, with the reason printed: reuse is an optimisation and never fails a publish.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chatbot.bucket.layout import Manifest, read_latest, read_manifest, sha256_file
from chatbot.bucket.restore import check_embedder, restore
from chatbot.bucket.storage import Storage
from chatbot.errors import SnapshotError
from indexer.collection import read_vectors
from indexer.documents import Chunk

__all__ = ["CHUNK_HASHES", "Reuse", "chunk_hash", "plan_reuse", "write_chunk_hashes"]
CHUNK_HASHES = "chunk-hashes.json"
logger = logging.getLogger(__name__)


def chunk_hash(chunk: Chunk, fingerprint: dict) -> str:
    """The content hash of one stored chunk: id, text, metadata and the embedder."""
    record = {
        "id": chunk.id,
        "text": chunk.text,
        "embedding_text": chunk.embedding_text(),
        "metadata": chunk.metadata(),
        "embedder": fingerprint,
    }
    encoded = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()


def write_chunk_hashes(directory: Path, hashes: dict[str, str]) -> dict:
    """Write the id -> hash file into a snapshot directory; returns the manifest's entry."""
    path = directory / CHUNK_HASHES
    path.write_text(json.dumps({"chunks": hashes}, sort_keys=True), encoding="utf-8")
    return {"file": CHUNK_HASHES, "sha256": sha256_file(path), "count": len(hashes)}


@dataclass(frozen=True)
class Reuse:
    """What a build may take from an earlier snapshot: vectors by chunk hash."""

    base: str | None = None  # the version reused from; None for a full build
    previous_chunks: int = 0  # chunks in that version
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    reason: str = ""  # why this is a full build, when it is one

    @classmethod
    def full(cls, reason: str) -> Reuse:
        """A full build, and why."""
        return cls(reason=reason)


def plan_reuse(storage: Storage, fingerprint: dict, wanted: set[str]) -> Reuse:
    """The vectors of LATEST's snapshot whose chunk hash is in ``wanted``.

    Never raises: a missing, unreadable or refused LATEST (or any failure to read it) gives
    a full build whose ``reason`` says why.
    """
    try:
        return _reuse_latest(storage, fingerprint, wanted)
    except Exception as exc:  # noqa: BLE001 - a failed reuse is a full build, never a failed publish
        logger.warning("Not reusing LATEST's vectors: %s", exc, exc_info=True)
        return Reuse.full(f"LATEST at {storage.uri} is unreadable or refused: {exc}")


def _reuse_latest(storage: Storage, fingerprint: dict, wanted: set[str]) -> Reuse:
    latest = read_latest(storage)
    if latest.generation == 0:
        return Reuse.full(f"nothing is published at {storage.uri} yet")
    manifest = read_manifest(storage, latest.require())
    try:
        check_embedder(manifest, fingerprint, user="this build")
    except SnapshotError as exc:
        return Reuse.full(str(exc))
    if manifest.data.get("chunk_hashes") is None:
        return Reuse.full(f"snapshot {manifest.version} records no chunk hashes")
    with tempfile.TemporaryDirectory(prefix="romega-reuse-") as tmp:
        restored = restore(storage, manifest, Path(tmp))
        hashes = read_chunk_hashes(restored.path, manifest)
        ids = {chunk_id: digest for chunk_id, digest in hashes.items() if digest in wanted}
        found = read_vectors(restored.path, sorted(ids), int(manifest.embedding["dimension"]))
    vectors = {ids[chunk_id]: vector for chunk_id, vector in found.items()}
    return Reuse(manifest.version, len(hashes), vectors)


def read_chunk_hashes(path: Path, manifest: Manifest) -> dict[str, str]:
    """The id -> hash map of a restored snapshot, checked against its manifest."""
    entry = manifest.data["chunk_hashes"]
    file = path / entry["file"]
    if sha256_file(file) != entry["sha256"]:
        raise SnapshotError(f"{entry['file']} of {manifest.version} fails its sha256 check")
    chunks = json.loads(file.read_text(encoding="utf-8")).get("chunks")
    if not isinstance(chunks, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in chunks.items()
    ):
        raise SnapshotError(f"{entry['file']} of {manifest.version} is not an id -> hash map")
    if len(chunks) != entry["count"] or len(chunks) != manifest.chunks:
        raise SnapshotError(
            f"{entry['file']} of {manifest.version} lists {len(chunks)} chunks, "
            f"the manifest says {manifest.chunks}"
        )
    return chunks
