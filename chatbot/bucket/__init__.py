"""Snapshots and the fleet: storage backends, the bucket layout, restore, publishing, control.

The bucket is the only thing the indexer, the chat instances and the admin function share:
the indexer publishes snapshots into it, chat instances restore and follow them, and the
admin function moves LATEST and the cache epoch. See docs/architecture.md.
"""

from chatbot.bucket.following import BucketFollower
from chatbot.bucket.layout import Manifest, read_latest
from chatbot.bucket.publishing import BuiltSnapshot, activate, list_published, publish
from chatbot.bucket.serving import SnapshotServer
from chatbot.bucket.storage import LocalStorage, Storage, open_storage

__all__ = [
    "BucketFollower",
    "BuiltSnapshot",
    "LocalStorage",
    "Manifest",
    "SnapshotServer",
    "Storage",
    "activate",
    "list_published",
    "open_storage",
    "publish",
    "read_latest",
]
