"""The bucket layout: every object key, the LATEST pointer and the manifest, in one place.

Keys are relative to the store's prefix (``SNAPSHOT_URI``)::

    snapshots/<version>.tar.zst        immutable archive of a Chroma directory
    snapshots/<version>.json           its manifest (``Manifest``)
    LATEST                             the live version's name, written last
    control/cache-epoch                the cache epoch (chatbot/bucket/control.py)
    control/instances/<id>.json        chat instances' heartbeats (chatbot/bucket/control.py)
    events/YYYY/MM/DD/<id>-<seq>.jsonl chat instances' event batches (chatbot/bucket/events.py)

The indexer, the chat function and the admin function all read and write through this module,
so the formats cannot drift apart.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from chatbot.bucket.storage import Storage
from chatbot.errors import ObjectNotFound, SnapshotError

__all__ = [
    "EPOCH_KEY",
    "EVENTS_PREFIX",
    "INSTANCES_PREFIX",
    "LATEST",
    "SNAPSHOTS",
    "Latest",
    "Manifest",
    "archive_key",
    "events_key",
    "heartbeat_key",
    "manifest_key",
    "read_latest",
    "read_manifest",
    "sha256_file",
    "valid_version",
    "write_latest",
]

LATEST = "LATEST"
SNAPSHOTS = "snapshots"
EPOCH_KEY = "control/cache-epoch"
INSTANCES_PREFIX = "control/instances/"
EVENTS_PREFIX = "events/"


def archive_key(version: str) -> str:
    """The key of a version's archive."""
    return f"{SNAPSHOTS}/{version}.tar.zst"


def manifest_key(version: str) -> str:
    """The key of a version's manifest."""
    return f"{SNAPSHOTS}/{version}.json"


def heartbeat_key(instance_id: str) -> str:
    """The key of one instance's heartbeat (the id made safe for an object name)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", instance_id)[:120].lstrip(".") or "instance"
    return f"{INSTANCES_PREFIX}{safe}.json"


def events_key(day: date, instance_id: str, seq: int) -> str:
    """The key of one batch of an instance's events (the id made safe as in heartbeat_key)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", instance_id)[:120].lstrip(".") or "instance"
    return f"{EVENTS_PREFIX}{day:%Y/%m/%d}/{safe}-{seq:016d}.jsonl"


def valid_version(version: str) -> bool:
    """Versions are plain names: they become object keys and directory names."""
    return (
        0 < len(version) <= 100
        and version.isascii()
        and version[0].isalnum()
        and all(ch.isalnum() or ch in "-_." for ch in version)
    )


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- LATEST ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latest:
    """What the LATEST object holds, and its generation (0 when nothing is published)."""

    raw: str
    generation: int
    uri: str

    @property
    def version(self) -> str | None:
        """The version LATEST names, or None when it is missing or not a version name."""
        return self.raw if valid_version(self.raw) else None

    def require(self) -> str:
        """The version to serve; SnapshotError when there is none."""
        if self.generation == 0:
            raise SnapshotError(
                f"no snapshot published at {self.uri} (LATEST missing): run `python -m indexer run`"
            )
        if self.version is None:
            raise SnapshotError(f"LATEST holds an invalid version name {self.raw[:80]!r}")
        return self.version


def read_latest(storage: Storage) -> Latest:
    """Read the LATEST pointer (a missing object reads as generation 0)."""
    try:
        raw, generation = storage.read(LATEST)
    except ObjectNotFound:
        return Latest("", 0, storage.uri)
    return Latest(raw.decode("utf-8", "replace").strip(), generation, storage.uri)


def write_latest(storage: Storage, version: str, *, generation: int) -> int:
    """Point LATEST at ``version`` if it is still at ``generation`` (PreconditionFailed if not)."""
    return storage.write(LATEST, f"{version}\n".encode(), if_generation_match=generation)


# -- manifests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """What a published snapshot claims to be; checked before anything is served.

    Fields: version, created_at, chromadb, embedding {backend, model, sha256, dimension},
    chunking, counts {documents, chunks}, sources, archive {sha256, bytes, unpacked_bytes}.
    """

    data: dict

    @property
    def version(self) -> str:
        return self.data["version"]

    @property
    def embedding(self) -> dict:
        return self.data["embedding"]

    @property
    def archive(self) -> dict:
        return self.data["archive"]

    @property
    def chunks(self) -> int:
        return int(self.data["counts"]["chunks"])

    @classmethod
    def parse(cls, raw: bytes, expected_version: str | None = None) -> Manifest:
        """A manifest from its JSON bytes; SnapshotError when a required field is missing."""
        try:
            data = json.loads(raw)
            version = data["version"]
            _ = data["embedding"]["model"], data["embedding"]["sha256"]
            _ = data["archive"]["sha256"], int(data["archive"]["bytes"])
            _ = int(data["counts"]["chunks"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SnapshotError(f"manifest is malformed: {exc!r}") from None
        if expected_version is not None and version != expected_version:
            raise SnapshotError(
                f"manifest names version {version!r}, expected {expected_version!r}"
            )
        return cls(data)

    def to_bytes(self) -> bytes:
        """The manifest as published: indented, sorted JSON."""
        return json.dumps(self.data, indent=2, sort_keys=True).encode()

    def renamed(self, version: str) -> Manifest:
        """The same snapshot under another version name."""
        return Manifest({**self.data, "version": version})

    def summary(self) -> dict:
        """The part shown on /health and in admin listings."""
        return {
            "version": self.version,
            "created_at": self.data.get("created_at"),
            "documents": self.data["counts"].get("documents"),
            "chunks": self.chunks,
            "embedding_model": self.embedding["model"],
        }


def read_manifest(storage: Storage, version: str) -> Manifest:
    """The published manifest of ``version``; SnapshotError if it is missing or malformed."""
    if not valid_version(version):
        raise SnapshotError(f"invalid snapshot version {version[:80]!r}")
    try:
        raw, _ = storage.read(manifest_key(version))
    except ObjectNotFound:
        raise SnapshotError(f"snapshot {version} has no manifest") from None
    return Manifest.parse(raw, expected_version=version)
