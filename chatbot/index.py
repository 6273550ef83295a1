"""The Chroma collection: built once by the indexer, opened read-mostly by chat instances."""

from __future__ import annotations

import contextlib
import logging
import pickle
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chatbot.documents import Chunk
from chatbot.errors import SnapshotError

COLLECTION = "knowledge"
ADD_BATCH = 1000
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk with its cosine similarity to the question."""

    text: str
    source: str
    title: str
    heading: str
    score: float


def _client(path: Path):
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    return chromadb.PersistentClient(
        path=str(path),
        settings=ChromaSettings(anonymized_telemetry=False, allow_reset=False),
    )


def build_collection(path: Path, chunks: list[Chunk], vectors: np.ndarray) -> None:
    """Write chunks and their vectors into a new persistent collection with a flushed HNSW.

    Chroma persists the HNSW index only when ``sync_threshold`` additions are pending; with
    the threshold at the total count the final batch flushes it exactly once, so the snapshot
    opens without replaying its write-ahead log (chroma issue 7463).
    """
    if len(chunks) < 2:
        raise SnapshotError("the knowledge base must yield at least 2 chunks to index")
    client = _client(path)
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


class KnowledgeIndex:
    """An opened snapshot collection answering nearest-neighbour queries."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._client = _client(path)
        try:
            self._collection = self._client.get_collection(COLLECTION)
        except Exception as exc:
            raise SnapshotError(f"snapshot at {path} has no '{COLLECTION}' collection") from exc
        self._lock = threading.Lock()
        self.count = self._collection.count()

    def query(self, vector: np.ndarray, k: int) -> list[Passage]:
        """The k passages nearest to ``vector``, best first."""
        with self._lock:  # chroma's local segment reader is not documented as thread-safe
            result = self._collection.query(
                query_embeddings=[vector],
                n_results=min(k, self.count),
                include=["documents", "metadatas", "distances"],
            )
        passages = []
        for text, meta, distance in zip(
            result["documents"][0], result["metadatas"][0], result["distances"][0], strict=True
        ):
            meta = meta or {}
            passages.append(
                Passage(
                    text=text or "",
                    source=str(meta.get("source", "")),
                    title=str(meta.get("title", "")),
                    heading=str(meta.get("heading", "")),
                    score=round(1.0 - float(distance), 4),
                )
            )
        return passages

    def close(self) -> None:
        """Release chroma's handles on the directory so it can be deleted."""
        self._client.close()
