"""Retrieval: the restored Chroma collection answering nearest-neighbour queries.

The indexer writes the collection (indexer/collection.py) through ``open_client`` too, so
both sides open Chroma with the same settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

from chatbot.errors import SnapshotError

__all__ = ["COLLECTION", "KnowledgeIndex", "Passage", "open_client"]
COLLECTION = "knowledge"
# The smoke query asks for this many neighbours of a stored vector; the vector's own chunk
# must be among them, at a cosine distance of (almost) zero.
SMOKE_RESULTS = 10
SMOKE_MAX_DISTANCE = 1e-3


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk with its cosine similarity to the question."""

    text: str
    source: str
    title: str
    heading: str
    score: float
    url: str = ""  # the document's public page, when it names one (front matter, canonical)

    def with_public_url(self, base_url: str | None) -> Passage:
        """This passage with ``url`` set: its own, else ``base_url`` + its path, else empty."""
        if self.url or not base_url:
            return self
        return dataclasses.replace(self, url=f"{base_url.rstrip('/')}/{quote(self.source)}")


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
            try:
                self._collection = self._client.get_collection(COLLECTION)
            except Exception as exc:
                raise SnapshotError(f"snapshot at {path} has no '{COLLECTION}' collection") from exc
            self._lock = threading.Lock()
            self.count = self._collection.count()
        except BaseException:
            with contextlib.suppress(Exception):  # a refused snapshot's files must be deletable
                self._client.close()
            raise

    def smoke_query(self) -> None:
        """Query with a vector the collection itself stores: its own chunk must come back.

        Run once after opening (serving, and the admin's activation, which has no embedder):
        a corrupt HNSW index can open and count fine and fail only here. Chroma's own errors
        are left to the caller to turn into a refusal; a wrong answer is a SnapshotError.
        """
        if self.count < 1:
            raise SnapshotError(f"snapshot at {self.path} holds no chunks")
        with self._lock:
            probe = self._collection.get(limit=1, include=["embeddings"])
            ids, vectors = probe["ids"], probe["embeddings"]
            if not len(ids) or vectors is None or not len(vectors):
                raise SnapshotError(f"snapshot at {self.path} returned no stored vector")
            result = self._collection.query(
                query_embeddings=[np.asarray(vectors[0], dtype=np.float32)],
                n_results=min(SMOKE_RESULTS, self.count),
                include=["distances"],
            )
        found = dict(zip(result["ids"][0], result["distances"][0], strict=True))
        if ids[0] not in found or float(found[ids[0]]) > SMOKE_MAX_DISTANCE:
            raise SnapshotError(
                f"smoke query on the snapshot at {self.path} did not find chunk {ids[0]!r} "
                "by its own vector"
            )

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
                    url=str(meta.get("url", "")),
                )
            )
        return passages

    def documents(self) -> dict[str, str]:
        """Every document the snapshot holds: its source path and title (for insights)."""
        with self._lock:
            metadatas = self._collection.get(include=["metadatas"])["metadatas"] or []
        found = ((str(m.get("source", "")), str(m.get("title", ""))) for m in metadatas if m)
        return dict(sorted(found))

    def close(self) -> None:
        """Release chroma's handles on the directory so it can be deleted."""
        self._client.close()
