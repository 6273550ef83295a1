"""The snapshot the report matches unanswered questions against: LATEST, restored and verified
as a chat instance would (chatbot/bucket/restore.py) into a temporary directory, opened for
nearest documents and removed afterwards (/tmp is RAM on Cloud Functions: nothing stays)."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chatbot.answering.embeddings import Embedder
from chatbot.answering.retrieval import KnowledgeIndex
from chatbot.bucket.layout import read_latest, read_manifest
from chatbot.bucket.restore import check_embedder, open_verified, restore
from chatbot.bucket.storage import Storage
from chatbot.errors import SnapshotError

__all__ = ["latest_index"]
logger = logging.getLogger(__name__)


@contextmanager
def latest_index(
    storage: Storage, embedder: Embedder
) -> Iterator[tuple[str, KnowledgeIndex] | None]:
    """``(version, index)`` of LATEST, restored for the ``with`` block; None when there is none.

    None too, with a warning, when LATEST was embedded by another model than ``embedder``
    (its vectors could not be compared) or fails its checks: the report is still worth having,
    without nearest and never-cited documents.
    """
    version = read_latest(storage).version
    if version is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="romega-insights-snapshot-") as root:
        try:
            manifest = read_manifest(storage, version)
            check_embedder(manifest, embedder.fingerprint(), user="insights")
            restored = restore(storage, manifest, Path(root))
            index = open_verified(restored.path, manifest, KnowledgeIndex)
        except SnapshotError as exc:
            logger.warning("Insights without a snapshot: %s", exc)
            yield None
            return
        try:
            yield version, index
        finally:
            index.close()
