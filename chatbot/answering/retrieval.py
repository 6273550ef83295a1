"""Retrieval: the restored Chroma collection answering nearest-neighbour queries.

The indexer writes the collection (indexer/collection.py) through ``open_client`` too, so
both sides open Chroma with the same settings.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chatbot.errors import SnapshotError

__all__ = ["COLLECTION", "KnowledgeIndex", "Passage", "open_client"]
COLLECTION = "knowledge"


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk with its cosine similarity to the question."""

    text: str
    source: str
    title: str
    heading: str
    score: float


def open_client(path: Path):
    """A Chroma client on a persistent directory, telemetry off."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    return chromadb.PersistentClient(
        path=str(path),
        settings=ChromaSettings(anonymized_telemetry=False, allow_reset=False),
    )


class KnowledgeIndex:
    """An opened snapshot collection answering nearest-neighbour queries."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._client = open_client(path)
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
