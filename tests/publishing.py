"""Publishing test snapshots into any Storage: copies of the session's real build, good or not."""

from __future__ import annotations

import shutil
from pathlib import Path

from chatbot.bucket.layout import archive_key, manifest_key, read_latest, write_latest
from chatbot.bucket.publishing import BuiltSnapshot, publish
from chatbot.bucket.storage import Storage


def publish_copy(
    storage: Storage, built: BuiltSnapshot, version: str, workdir: Path, *, latest: bool = True
) -> str:
    """Publish the built snapshot again under another version name (LATEST moved if asked)."""
    manifest = built.manifest.renamed(version)
    workdir.mkdir(parents=True, exist_ok=True)
    archive = workdir / f"{version}.tar.zst"
    shutil.copyfile(built.archive, archive)
    if latest:
        return publish(storage, BuiltSnapshot(manifest, archive))
    storage.upload(archive_key(version), archive, if_generation_match=0)
    storage.write(manifest_key(version), manifest.to_bytes(), if_generation_match=0)
    return version


def corrupt_archive(storage: Storage, version: str) -> None:
    """Flip bytes in the middle of a published archive: same size, wrong sha256."""
    data, _ = storage.read(archive_key(version))
    middle = len(data) // 2
    flipped = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    storage.write(archive_key(version), data[:middle] + flipped + data[middle + 16 :])


def point_latest(storage: Storage, version: str) -> None:
    """Move LATEST as a publisher would, under its current generation."""
    write_latest(storage, version, generation=read_latest(storage).generation)
