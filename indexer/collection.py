"""The Chroma directory of a snapshot: written with a flushed HNSW index, VACUUMed, packed.

Only the indexer writes collections; chat instances open them with
chatbot/answering/retrieval.py (``open_client`` is shared, so both sides use one setup).
"""

from __future__ import annotations

import contextlib
import pickle
import sqlite3
import tarfile
from pathlib import Path

import numpy as np
import zstandard

from chatbot.answering.retrieval import COLLECTION, open_client
from chatbot.bucket.layout import sha256_file
from chatbot.errors import SnapshotError
from indexer.documents import Chunk

__all__ = ["build_collection", "check_flushed", "pack", "read_vectors"]
ADD_BATCH = 1000


def build_collection(path: Path, chunks: list[Chunk], vectors: np.ndarray) -> None:
    """Write chunks and their vectors into a new persistent collection with a flushed HNSW.

    Chroma persists the HNSW index only when ``sync_threshold`` additions are pending; with
    the threshold at the total count the final batch flushes it exactly once, so the snapshot
    opens without replaying its write-ahead log (chroma issue 7463).
    """
    if len(chunks) < 2:
        raise SnapshotError("the knowledge base must yield at least 2 chunks to index")
    client = open_client(path)
    collection = client.create_collection(
        COLLECTION,
        embedding_function=None,
        configuration={
            "hnsw": {
                "space": "cosine",
                "sync_threshold": len(chunks),
                "batch_size": min(len(chunks), ADD_BATCH),
            }
        },
    )
    for start in range(0, len(chunks), ADD_BATCH):
        batch = chunks[start : start + ADD_BATCH]
        collection.add(
            ids=[c.id for c in batch],
            embeddings=vectors[start : start + len(batch)],
            documents=[c.text for c in batch],
            metadatas=[c.metadata() for c in batch],
        )
    client.close()
    check_flushed(path, len(chunks))
    _vacuum(path / "chroma.sqlite3")


def read_vectors(path: Path, ids: list[str], dimension: int) -> dict[str, np.ndarray]:
    """The stored vectors of ``ids`` in a snapshot directory, by id (absent ids are left out).

    A vector of the wrong dimension or with a non-finite value is a SnapshotError: reusing
    it would build a corrupt snapshot.
    """
    client = open_client(path)
    try:
        collection = client.get_collection(COLLECTION)
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(ids), ADD_BATCH):
            got = collection.get(ids=ids[start : start + ADD_BATCH], include=["embeddings"])
            vectors = np.asarray(got["embeddings"], dtype=np.float32).reshape(len(got["ids"]), -1)
            wrong = vectors.shape[1] != dimension or not np.isfinite(vectors).all()
            if len(got["ids"]) and wrong:
                raise SnapshotError(f"stored vectors of {path} are not finite {dimension}-vectors")
            found.update(zip(got["ids"], vectors, strict=True))
        return found
    finally:
        client.close()


def _vacuum(database: Path) -> None:
    """Drop the free pages Chroma leaves behind: snapshots shrink by a third (benchmarks.md)."""
    with contextlib.closing(sqlite3.connect(database)) as conn:
        conn.execute("VACUUM")


def check_flushed(path: Path, expected: int) -> None:
    """Refuse a snapshot whose HNSW index on disk does not hold every vector."""
    pickles = list(path.glob("*/index_metadata.pickle"))
    if len(pickles) != 1:
        raise SnapshotError(f"HNSW index of {path} was not flushed to disk")
    with open(pickles[0], "rb") as fh:
        meta = pickle.load(fh)  # noqa: S301 - written by our own indexer, sha256-checked
    if len(meta.get("id_to_label", ())) != expected:
        raise SnapshotError(
            f"HNSW index holds {len(meta.get('id_to_label', ()))} vectors, expected {expected}"
        )


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
