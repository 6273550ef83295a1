"""Build a snapshot from a knowledge folder and verify it before anyone can publish it."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import chromadb
import numpy as np
from tqdm import tqdm

from chatbot.answering.embeddings import Embedder
from chatbot.answering.retrieval import KnowledgeIndex
from chatbot.bucket.layout import Manifest
from chatbot.bucket.publishing import BuiltSnapshot
from chatbot.bucket.restore import safe_extract
from chatbot.bucket.storage import Storage
from chatbot.errors import SnapshotError
from indexer import documents
from indexer.collection import build_collection, pack
from indexer.incremental import Reuse, chunk_hash, plan_reuse, write_chunk_hashes

__all__ = ["build_from_folder", "build_snapshot", "embed_chunks", "snapshot_manifest"]
logger = logging.getLogger(__name__)
# Chunks handed to the embedder at a time (one progress-bar step): the ONNX model runs them
# in batches of 32, Gemini in requests of 100.
EMBED_STEP = 200


def embed_chunks(
    embedder: Embedder,
    chunks: list[documents.Chunk],
    batch: int = EMBED_STEP,
    progress: bool | None = None,
) -> np.ndarray:
    """Embed every chunk with a progress bar on a terminal, quietly elsewhere.

    Chunks go to the model shortest first, so each batch pads to a length close to its own.
    """
    show = sys.stderr.isatty() if progress is None else progress
    texts = [c.embedding_text() for c in chunks]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    vectors = np.empty((len(chunks), embedder.dimension), dtype=np.float32)
    with tqdm(total=len(chunks), unit="chunk", desc="embedding", disable=not show) as bar:
        for start in range(0, len(order), batch):
            part = order[start : start + batch]
            vectors[part] = embedder.embed([texts[i] for i in part])
            bar.update(len(part))
    return vectors


def _vectors(
    embedder: Embedder,
    chunks: list[documents.Chunk],
    hashes: list[str],
    reuse: Reuse,
    progress: bool | None,
) -> tuple[np.ndarray, list[int]]:
    """Every chunk's vector, reused by hash where possible; returns them and who was embedded."""
    vectors = np.empty((len(chunks), embedder.dimension), dtype=np.float32)
    missing = []
    for i, digest in enumerate(hashes):
        if digest in reuse.vectors:
            vectors[i] = reuse.vectors[digest]
        else:
            missing.append(i)
    if missing:
        fresh = embed_chunks(embedder, [chunks[i] for i in missing], progress=progress)
        if fresh.shape != (len(missing), embedder.dimension) or not np.isfinite(fresh).all():
            raise SnapshotError(
                f"the embedder returned vectors of shape {fresh.shape}, expected "
                f"{(len(missing), embedder.dimension)}, or non-finite values"
            )
        vectors[missing] = fresh
    return vectors, missing


def _version(chunks: list[documents.Chunk], fingerprint: dict, now: datetime) -> str:
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode())
    for chunk in chunks:
        digest.update(f"{chunk.id}\0{chunk.heading}\0{chunk.text}\0".encode())
    return f"{now:%Y%m%dT%H%M%SZ}-{digest.hexdigest()[:10]}"


def snapshot_manifest(
    version: str,
    chunks: list[documents.Chunk],
    document_count: int,
    fingerprint: dict,
    archive_info: dict,
    now: datetime,
    **extra: object,
) -> Manifest:
    """The manifest of a snapshot of ``chunks`` packed as ``archive_info`` describes."""
    return Manifest(
        {
            "version": version,
            "created_at": now.isoformat(timespec="seconds"),
            "chromadb": chromadb.__version__,
            "embedding": fingerprint,
            "chunking": {
                "strategy": "headings+word-windows",
                "chunk_words": documents.CHUNK_WORDS,
                "overlap_words": documents.OVERLAP_WORDS,
            },
            "counts": {"documents": document_count, "chunks": len(chunks)},
            "sources": sorted({c.source for c in chunks}),
            "archive": archive_info,
            **extra,
        }
    )


def build_snapshot(
    chunks: list[documents.Chunk],
    document_count: int,
    embedder: Embedder,
    out_dir: Path,
    *,
    progress: bool | None = None,
    now: datetime | None = None,
    reuse_from: Storage | None = None,
) -> BuiltSnapshot:
    """Embed ``chunks`` into a Chroma directory, pack it, and verify the packed copy.

    With ``reuse_from`` (the bucket being published to), the vectors of chunks unchanged
    since the snapshot LATEST names there are reused and only the others embedded
    (indexer/incremental.py); without it, every chunk is embedded.
    """
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    fingerprint = embedder.fingerprint()
    version = _version(chunks, fingerprint, now)
    hashes = [chunk_hash(c, fingerprint) for c in chunks]
    if reuse_from is None:
        reuse = Reuse.full("reuse was not asked for (`run --full`, or `build`)")
    else:
        reuse = plan_reuse(reuse_from, fingerprint, set(hashes))
    out_dir.mkdir(parents=True, exist_ok=True)
    vectors, embedded = _vectors(embedder, chunks, hashes, reuse, progress)
    embed_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="romega-build-") as tmp:
        db_dir = Path(tmp) / "chroma"
        build_collection(db_dir, chunks, vectors)
        chroma_seconds = time.perf_counter() - started - embed_seconds
        ids = (c.id for c in chunks)
        hash_entry = write_chunk_hashes(db_dir, dict(zip(ids, hashes, strict=True)))
        archive = out_dir / f"{version}.tar.zst"
        archive_info = pack(db_dir, archive)
    reused = len(chunks) - len(embedded)
    manifest = snapshot_manifest(
        version,
        chunks,
        document_count,
        fingerprint,
        archive_info,
        now,
        build_seconds={"embed": round(embed_seconds, 3), "chroma": round(chroma_seconds, 3)},
        chunk_hashes=hash_entry,
        reuse={
            "base": reuse.base,
            "reused": reused,
            "embedded": len(embedded),
            "removed": reuse.previous_chunks - reused,
            "full_build_reason": reuse.reason or None,
        },
    )
    built = BuiltSnapshot(manifest, archive)
    probe = embedded[0] if embedded else 0
    verify_snapshot(built, chunks[probe], vectors[probe])
    built.write_manifest()
    logger.info(
        "Built snapshot %s: %d documents, %d chunks (reused %d, embedded %d, removed %d), %d bytes",
        version,
        document_count,
        len(chunks),
        reused,
        len(embedded),
        reuse.previous_chunks - reused,
        archive_info["bytes"],
    )
    return built


def verify_snapshot(built: BuiltSnapshot, probe: documents.Chunk, vector: np.ndarray) -> None:
    """Reopen the packed archive in a fresh directory and check a smoke query finds ``probe``
    by its ``vector``."""
    with tempfile.TemporaryDirectory(prefix="romega-verify-") as tmp:
        path = Path(tmp) / "chroma"
        safe_extract(built.archive, path)
        index = KnowledgeIndex(path)
        try:
            if index.count != built.manifest.chunks:
                raise SnapshotError(
                    f"reopened snapshot holds {index.count} chunks, built {built.manifest.chunks}"
                )
            hits = index.query(vector, k=3)
            if not hits or probe.text not in {h.text for h in hits}:
                raise SnapshotError("smoke query on the reopened snapshot did not find its chunk")
        finally:
            index.close()


def build_from_folder(
    knowledge: Path,
    embedder: Embedder,
    out_dir: Path,
    progress: bool | None = None,
    reuse_from: Storage | None = None,
) -> BuiltSnapshot:
    """Chunk a knowledge folder and build its snapshot (reusing from ``reuse_from``'s LATEST)."""
    if not knowledge.is_dir():
        raise SnapshotError(f"knowledge folder {knowledge} does not exist")
    chunks, count = documents.chunk_knowledge(knowledge)
    if not chunks:
        raise SnapshotError(f"no .md, .txt or .html documents with text under {knowledge}")
    return build_snapshot(
        chunks, count, embedder, out_dir, progress=progress, reuse_from=reuse_from
    )
