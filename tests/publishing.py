"""Publishing test snapshots into any Storage: copies of the session's real build, good or not."""

from __future__ import annotations

import shutil
from pathlib import Path

from chatbot.bucket.layout import (
    archive_key,
    manifest_key,
    read_latest,
    sha256_file,
    write_latest,
)
from chatbot.bucket.publishing import BuiltSnapshot, publish
from chatbot.bucket.storage import LocalStorage, Storage


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


def archive_entry(archive: Path, unpacked_bytes: int) -> dict:
    """The manifest's ``archive`` entry for any archive file: its real sha256 and size."""
    return {
        "sha256": sha256_file(archive),
        "bytes": archive.stat().st_size,
        "unpacked_bytes": unpacked_bytes,
    }


def publish_raw(
    storage: Storage, version: str, archive: Path, manifest: bytes, *, latest: bool = True
) -> str:
    """Publish any archive and manifest bytes under ``version``, as an attacker with write
    access to the bucket could (nothing is checked); LATEST moved if asked."""
    storage.upload(archive_key(version), archive, if_generation_match=0)
    storage.write(manifest_key(version), manifest, if_generation_match=0)
    if latest:
        point_latest(storage, version)
    return version


class CountingStorage(LocalStorage):
    """A local bucket that counts archive downloads (a storage seam, not a mock)."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.downloads = 0

    def download(self, key, dest):
        self.downloads += 1
        return super().download(key, dest)
