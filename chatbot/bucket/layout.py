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
from chatbot.errors import ObjectNotFound, PreconditionFailed, SnapshotError

__all__ = [
    "EPOCH_KEY",
    "EVENTS_PREFIX",
    "INSTANCES_PREFIX",
    "LATEST",
    "MAX_MANIFEST_BYTES",
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
# A real manifest is a few KiB (its largest part is the list of sources).
MAX_MANIFEST_BYTES = 1 << 20


def archive_key(version: str) -> str:
    """The key of a version's archive."""
    return f"{SNAPSHOTS}/{version}.tar.zst"


def manifest_key(version: str) -> str:
    """The key of a version's manifest."""
    return f"{SNAPSHOTS}/{version}.json"


def _object_name(instance_id: str) -> str:
    """An instance id made safe for an object name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", instance_id)[:120].lstrip(".") or "instance"


def heartbeat_key(instance_id: str) -> str:
    """The key of one instance's heartbeat."""
    return f"{INSTANCES_PREFIX}{_object_name(instance_id)}.json"


def events_key(day: date, instance_id: str, seq: int) -> str:
    """The key of one batch of an instance's events."""
    return f"{EVENTS_PREFIX}{day:%Y/%m/%d}/{_object_name(instance_id)}-{seq:016d}.jsonl"


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
    """Point LATEST at ``version`` if it is still at ``generation`` (PreconditionFailed if not).

    A conditional write is retried by the storage client; when the first attempt landed but
    its answer was lost, the retry meets our own write. LATEST then already names
    ``version``: that is success, not a lost race.
    """
    try:
        return storage.write(LATEST, f"{version}\n".encode(), if_generation_match=generation)
    except PreconditionFailed:
        now = read_latest(storage)
        if now.version == version:
            return now.generation
        raise


# -- manifests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """What a published snapshot claims to be; checked before anything is served.

    Fields (``parse`` checks each one's type; the optional ones may be missing or null):
    version (a plain name), created_at (str, optional), chromadb (str, optional),
    embedding {backend str, model str, sha256 str or null, dimension int >= 1},
    chunking (object, optional), counts {chunks int >= 0, documents int >= 0 optional},
    sources (list of str, optional), archive {sha256 (64 hex digits), bytes int >= 0,
    unpacked_bytes int >= 0 (the sum of the files' sizes)}, chunk_hashes (optional: {file (a
    plain name inside the archive), sha256, count int >= 0}, indexer/incremental.py).
    Unknown fields are kept.
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

    @property
    def unpacked_bytes(self) -> int:
        """What the archive's files add up to once extracted."""
        return int(self.archive["unpacked_bytes"])

    @classmethod
    def parse(cls, raw: bytes, expected_version: str | None = None) -> Manifest:
        """A manifest from its JSON bytes; SnapshotError naming the first field that is wrong.

        Every field a reader relies on is checked for its type (and range) here, so nothing
        downstream meets a manifest that makes it raise anything but SnapshotError.
        """
        if len(raw) > MAX_MANIFEST_BYTES:
            raise SnapshotError(f"manifest is {len(raw)} bytes, more than {MAX_MANIFEST_BYTES}")
        try:
            data = json.loads(raw)
        # UnicodeDecodeError is a ValueError; RecursionError comes from deeply nested input.
        except (ValueError, TypeError, RecursionError) as exc:
            raise SnapshotError(f"manifest is not JSON: {str(exc)[:200]}") from None
        try:
            _check_manifest(data)
        except _Malformed as exc:
            raise SnapshotError(f"manifest is malformed: {exc}") from None
        version = data["version"]
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


# -- checking a manifest's fields -----------------------------------------------------------

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_MISSING = object()


class _Malformed(Exception):
    """A manifest field is missing or of the wrong type; the message names it."""


def _field(data: dict, path: str, kinds: tuple[type, ...], *, required: bool = True) -> object:
    """``data[a][b]`` for ``path`` "a.b", checked to be one of ``kinds`` (bool is no int)."""
    value: object = data
    for part in path.split("."):
        if not isinstance(value, dict):
            raise _Malformed(f"{path} is missing (its parent is not an object)")
        value = value.get(part, _MISSING)
    if value is _MISSING:
        if required:
            raise _Malformed(f"{path} is missing")
        return None
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise _Malformed(f"{path} must be {names}, not {type(value).__name__} {value!r:.60}")
    return value


def _count(data: dict, path: str, *, required: bool = True, minimum: int = 0) -> None:
    value = _field(data, path, (int,), required=required)
    if value is not None and value < minimum:  # type: ignore[operator]
        raise _Malformed(f"{path} must be an integer >= {minimum}, not {value}")


def _sha256(data: dict, path: str) -> None:
    value = _field(data, path, (str,))
    if not _SHA256_HEX.fullmatch(value):  # type: ignore[arg-type]
        raise _Malformed(f"{path} must be 64 lowercase hex digits, not {value!r:.80}")


def _check_manifest(data: object) -> None:
    """Raise _Malformed unless ``data`` has every field of a manifest, each of its type."""
    if not isinstance(data, dict):
        raise _Malformed(f"the manifest must be a JSON object, not {type(data).__name__}")
    version = _field(data, "version", (str,))
    if not valid_version(version):  # type: ignore[arg-type]
        raise _Malformed(f"version {version!r:.80} is not a plain snapshot name")
    _field(data, "created_at", (str, type(None)), required=False)
    _field(data, "chromadb", (str, type(None)), required=False)
    _field(data, "chunking", (dict, type(None)), required=False)
    sources = _field(data, "sources", (list, type(None)), required=False)
    if sources is not None and not all(isinstance(s, str) for s in sources):  # type: ignore[union-attr]
        raise _Malformed("sources must be a list of strings")
    _field(data, "embedding", (dict,))
    _field(data, "embedding.backend", (str,))
    _field(data, "embedding.model", (str,))
    _field(data, "embedding.sha256", (str, type(None)))
    _count(data, "embedding.dimension", minimum=1)
    _field(data, "counts", (dict,))
    _count(data, "counts.chunks")
    _count(data, "counts.documents", required=False)
    _field(data, "archive", (dict,))
    _sha256(data, "archive.sha256")
    _count(data, "archive.bytes")
    _count(data, "archive.unpacked_bytes")
    _check_chunk_hashes(data)


def _check_chunk_hashes(data: dict) -> None:
    """The optional ``chunk_hashes`` entry: a plain file name, its sha256 and a count."""
    if _field(data, "chunk_hashes", (dict, type(None)), required=False) is None:
        return
    name = _field(data, "chunk_hashes.file", (str,))
    if not valid_version(name):  # type: ignore[arg-type]
        raise _Malformed(f"chunk_hashes.file {name!r:.80} is not a plain file name")
    _sha256(data, "chunk_hashes.sha256")
    _count(data, "chunk_hashes.count")


def read_manifest(storage: Storage, version: str) -> Manifest:
    """The published manifest of ``version``; SnapshotError if it is missing or malformed."""
    if not valid_version(version):
        raise SnapshotError(f"invalid snapshot version {version[:80]!r}")
    try:
        raw, _ = storage.read(manifest_key(version))
    except ObjectNotFound:
        raise SnapshotError(f"snapshot {version} has no manifest") from None
    return Manifest.parse(raw, expected_version=version)
