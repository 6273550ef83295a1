"""Publish a built snapshot: immutable objects first, the LATEST pointer swapped last.

Moving LATEST to an already-published version (``activate``) lives in chatbot/publishing.py,
shared with the admin function; it is re-exported here for the indexer's callers.
"""

from __future__ import annotations

import logging

from chatbot.errors import PreconditionFailed, SnapshotError
from chatbot.publishing import Activation, activate
from chatbot.snapshot import LATEST, archive_key, manifest_key
from chatbot.storage import Storage
from indexer.build import BuiltSnapshot

__all__ = ["Activation", "activate", "publish"]
logger = logging.getLogger(__name__)


def publish(storage: Storage, built: BuiltSnapshot) -> str:
    """Upload archive and manifest as new objects, then point LATEST at them.

    LATEST is replaced under the generation it had when publishing began, so when two
    publishers race exactly one wins; the loser removes its own objects and fails loudly.
    """
    import json

    version = built.manifest.version
    latest_generation = storage.generation(LATEST) or 0
    try:
        storage.upload(archive_key(version), built.archive, if_generation_match=0)
    except PreconditionFailed:
        raise SnapshotError(f"snapshot {version} is already published at {storage.uri}") from None
    try:
        manifest_bytes = json.dumps(built.manifest.data, indent=2, sort_keys=True).encode()
        storage.write(manifest_key(version), manifest_bytes, if_generation_match=0)
        storage.write(LATEST, f"{version}\n".encode(), if_generation_match=latest_generation)
    except PreconditionFailed:
        storage.delete(archive_key(version))
        storage.delete(manifest_key(version))
        raise SnapshotError(
            f"another publisher changed {storage.uri}/{LATEST} while {version} was uploading; "
            "nothing was published: rebuild and try again"
        ) from None
    except BaseException:
        storage.delete(archive_key(version))
        storage.delete(manifest_key(version))
        raise
    logger.info("Published snapshot %s to %s", version, storage.uri)
    return version
