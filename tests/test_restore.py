"""Snapshot integrity: only verified, safely extracted snapshots of the same embedder serve."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
import time

import pytest
import zstandard

from chatbot.answering.retrieval import KnowledgeIndex
from chatbot.bucket.following import BucketFollower
from chatbot.bucket.layout import (
    LATEST,
    archive_key,
    manifest_key,
    read_latest,
    read_manifest,
    sha256_file,
)
from chatbot.bucket.restore import (
    COMPLETE_MARKER,
    MAX_UNPACKED_BYTES,
    _CountingReader,
    check_embedder,
    check_limits,
    is_complete,
    open_verified,
    restore,
    safe_extract,
)
from chatbot.bucket.serving import SnapshotServer
from chatbot.bucket.storage import LocalStorage
from chatbot.errors import NotReady, SnapshotError
from tests.publishing import CountingStorage


def _object_path(storage: LocalStorage, key: str):
    return storage.root / key


def _rewrite_manifest(storage: LocalStorage, version: str, **changes) -> None:
    data = json.loads(_object_path(storage, manifest_key(version)).read_text())
    for dotted, value in changes.items():
        target = data
        *parents, leaf = dotted.split("__")
        for p in parents:
            target = target[p]
        target[leaf] = value
    _object_path(storage, manifest_key(version)).write_text(json.dumps(data))


def _publish_raw_archive(
    storage: LocalStorage,
    version: str,
    members: list[tarfile.TarInfo],
    payloads: dict[str, bytes],
    template: dict,
) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(payloads.get(info.name, b"")))
    blob = zstandard.ZstdCompressor().compress(raw.getvalue())
    storage.write(archive_key(version), blob)
    path = _object_path(storage, archive_key(version))
    manifest = dict(template, version=version)
    manifest["archive"] = {
        "sha256": sha256_file(path),
        "bytes": len(blob),
        "unpacked_bytes": sum(info.size for info in members if info.isfile()),
    }
    storage.write(manifest_key(version), json.dumps(manifest).encode())
    storage.write(LATEST, version.encode())


def test_restore_verifies_and_extracts_into_a_versioned_directory(bucket, tmp_path):
    version = read_latest(bucket).version
    manifest = read_manifest(bucket, version)
    started = time.perf_counter()
    restored = restore(bucket, manifest, tmp_path / "snap")
    elapsed = time.perf_counter() - started
    assert restored.manifest == manifest
    assert restored.path == tmp_path / "snap" / version / "chroma"
    assert (tmp_path / "snap" / version / ".complete").is_file()
    assert not [p for p in (tmp_path / "snap").iterdir() if p.name.startswith(".")]
    assert set(restored.timings) == {"download", "verify", "extract"}
    assert all(0 <= seconds <= elapsed for seconds in restored.timings.values())  # parts of it


class Racing(LocalStorage):
    """Records where the archive is downloaded to, and runs ``meanwhile`` then."""

    def __init__(self, root, meanwhile=lambda: None) -> None:
        super().__init__(root)
        self.meanwhile = meanwhile
        self.dest = None

    def download(self, key, dest):
        self.dest = dest
        self.meanwhile()
        return super().download(key, dest)


def test_a_restore_stages_beside_its_version_and_yields_to_one_finished_meanwhile(bucket, tmp_path):
    root = tmp_path / "snap"
    manifest = read_manifest(bucket, read_latest(bucket).version)
    # Another process sharing SNAPSHOT_DIR finishes the same version during our download.
    storage = Racing(bucket.root, meanwhile=lambda: restore(bucket, manifest, root))
    restored = restore(storage, manifest, root)
    staging = storage.dest.parent
    # Hidden, named for its version, on the same filesystem: the rename is atomic.
    assert staging.parent == root and staging.name.startswith(f".{manifest.version}.")
    assert restored.path == root / manifest.version / "chroma"
    assert is_complete(root / manifest.version, manifest)
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_a_half_written_version_directory_in_the_way_is_a_refusal(bucket, tmp_path):
    root = tmp_path / "snap"
    manifest = read_manifest(bucket, read_latest(bucket).version)
    in_the_way = root / manifest.version / "chroma"

    def half_written():
        in_the_way.mkdir(parents=True)
        (in_the_way / "chroma.sqlite3").write_bytes(b"partial")

    with pytest.raises(SnapshotError) as refused:
        restore(Racing(bucket.root, meanwhile=half_written), manifest, root)
    assert str(refused.value) == (
        f"{root / manifest.version} exists and is not a complete copy of the snapshot"
    )
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_an_extracted_version_is_reused_without_downloading(bucket, tmp_path):
    storage = CountingStorage(bucket.root)
    version = read_latest(storage).version
    manifest = read_manifest(storage, version)
    restore(storage, manifest, tmp_path / "snap")
    again = restore(storage, manifest, tmp_path / "snap")
    assert storage.downloads == 1
    assert again.timings == {"reused": 1.0} and again.manifest == manifest
    assert again.path == tmp_path / "snap" / version / "chroma"  # the same directory


@pytest.mark.parametrize("marker", [b"0" * 64, b"\xff\xfe not text", None])
def test_a_directory_without_this_archives_marker_is_restored_again(bucket, tmp_path, marker):
    storage = CountingStorage(bucket.root)
    version = read_latest(storage).version
    manifest = read_manifest(storage, version)
    restore(storage, manifest, tmp_path / "snap")
    complete = tmp_path / "snap" / version / COMPLETE_MARKER
    assert is_complete(complete.parent, manifest)
    if marker is None:
        complete.unlink()
    else:
        complete.write_bytes(marker)  # another archive's, or garbage
    assert not is_complete(complete.parent, manifest)


class Index:
    """An opened index whose checks fail as told (the real one is Chroma's, tested above)."""

    def __init__(self, count=0, smoke=None, close=None) -> None:
        self.count, self._smoke, self._close, self.closed = count, smoke, close, False

    def smoke_query(self) -> None:
        if self._smoke:
            raise self._smoke

    def close(self) -> None:
        self.closed = True
        if self._close:
            raise self._close


def test_an_index_that_fails_to_open_or_to_answer_is_refused_and_closed(bucket, tmp_path, caplog):
    manifest = read_manifest(bucket, read_latest(bucket).version)
    version, chunks = manifest.version, manifest.chunks
    empty = tmp_path / "chroma"  # no HNSW segment to check
    empty.mkdir()

    with pytest.raises(SnapshotError) as refused:  # its HNSW files cannot even be listed
        open_verified(tmp_path / "missing", manifest, KnowledgeIndex)
    assert str(refused.value) == (
        f"snapshot {version} cannot be opened: FileNotFoundError(2, 'No such file or directory')"
    )

    def boom(path):
        raise RuntimeError("boom")

    with pytest.raises(SnapshotError) as refused:
        open_verified(empty, manifest, boom)
    assert str(refused.value) == f"snapshot {version} cannot be opened: RuntimeError('boom')"

    short = Index(count=chunks - 1)
    with pytest.raises(SnapshotError) as refused:
        open_verified(empty, manifest, lambda path: short)
    assert str(refused.value) == (
        f"snapshot {version} holds {chunks - 1} chunks, manifest says {chunks}"
    )
    assert short.closed

    failing = Index(count=chunks, smoke=ValueError("bad vector"), close=OSError("busy"))
    with caplog.at_level(logging.WARNING, logger="chatbot.bucket.restore"):
        with pytest.raises(SnapshotError) as refused:
            open_verified(empty, manifest, lambda path: failing)
    assert str(refused.value) == (
        f"snapshot {version} fails its smoke query: ValueError('bad vector')"
    )
    assert failing.closed
    (warning,) = [r for r in caplog.records if r.name == "chatbot.bucket.restore"]
    assert warning.getMessage() == f"Closing refused snapshot {version} failed"
    assert isinstance(warning.exc_info[1], OSError)

    interrupted = Index(count=chunks, smoke=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):  # not turned into a refusal
        open_verified(empty, manifest, lambda path: interrupted)
    assert interrupted.closed
    good = Index(count=chunks)
    assert open_verified(empty, manifest, lambda path: good) is good and not good.closed


def test_flipped_bytes_fail_the_sha256_check_and_leave_nothing(bucket, tmp_path):
    version = read_latest(bucket).version
    path = _object_path(bucket, archive_key(version))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    manifest = read_manifest(bucket, version)
    with pytest.raises(SnapshotError) as refused:
        restore(bucket, manifest, tmp_path / "snap")
    assert list((tmp_path / "snap").iterdir()) == []
    got, want, size = hashlib.sha256(data).hexdigest(), manifest.archive["sha256"], len(data)
    assert str(refused.value) == (
        f"snapshot {version} failed its integrity check: sha256 {got[:12]}... ({size} bytes) "
        f"does not match the manifest's {want[:12]}... ({size} bytes)"
    )


def test_the_decompressed_stream_is_read_no_more_than_one_byte_past_its_limit():
    reader = _CountingReader(io.BytesIO(bytes(range(100))), limit=10)
    assert reader.read(0) == b"" and reader.read_bytes == 0
    assert reader.read(4) == bytes(range(4)) and reader.read_bytes == 4
    with pytest.raises(SnapshotError, match="^archive decompresses to more than 10 bytes"):
        reader.read(-1)  # "all": a block, capped at what the limit leaves, plus one
    assert reader.read_bytes == 11
    for size in (None, -1):
        exact = _CountingReader(io.BytesIO(bytes(10)), limit=10)
        assert exact.read(size) == bytes(10) and exact.read(5) == b""  # the limit itself is fine


def test_a_truncated_archive_is_refused_even_with_a_matching_manifest(bucket, tmp_path):
    version = read_latest(bucket).version
    path = _object_path(bucket, archive_key(version))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _rewrite_manifest(
        bucket, version, archive__sha256=sha256_file(path), archive__bytes=path.stat().st_size
    )
    with pytest.raises(SnapshotError, match="corrupt or truncated"):
        restore(bucket, read_manifest(bucket, version), tmp_path / "snap")
    assert list((tmp_path / "snap").iterdir()) == []


@pytest.mark.parametrize(
    "name, kind",
    [
        ("../escape.txt", tarfile.REGTYPE),
        ("/abs/escape.txt", tarfile.REGTYPE),
        ("\\windows\\escape.txt", tarfile.REGTYPE),  # a Windows-style root
        ("chroma.sqlite3", tarfile.SYMTYPE),
        ("dev", tarfile.CHRTYPE),
    ],
)
def test_unsafe_members_abort_the_whole_extraction(bucket, tmp_path, name, kind):
    version = read_latest(bucket).version
    template = json.loads(_object_path(bucket, manifest_key(version)).read_text())
    ok = tarfile.TarInfo("ok.txt")
    ok.size = 2
    bad = tarfile.TarInfo(name)
    bad.type = kind
    if kind == tarfile.SYMTYPE:
        bad.linkname = "/etc/passwd"
    elif kind == tarfile.REGTYPE:
        bad.size = 4
    _publish_raw_archive(bucket, "evil1", [ok, bad], {"ok.txt": b"ok", name: b"evil"}, template)
    with pytest.raises(SnapshotError, match="escape|not a regular file"):
        restore(bucket, read_manifest(bucket, "evil1"), tmp_path / "snap" / "inner")
    assert not (tmp_path / "snap" / "escape.txt").exists()
    assert not (tmp_path / "snap" / "inner" / "evil1").exists()


def test_a_snapshot_from_another_embedding_model_is_refused(bucket):
    version = read_latest(bucket).version
    _rewrite_manifest(
        bucket, version, embedding__model="text-embedding-004", embedding__dimension=768
    )
    manifest = read_manifest(bucket, version)
    with pytest.raises(SnapshotError) as refused:
        check_embedder(
            manifest,
            {
                "backend": "local",
                "model": "all-MiniLM-L6-v2-onnx-int8",
                "sha256": manifest.embedding["sha256"],
                "dimension": 384,
            },
        )
    assert str(refused.value) == (
        f"snapshot {version} was built with embedding model 'text-embedding-004', this "
        "instance uses 'all-MiniLM-L6-v2-onnx-int8'; rebuild the snapshot with the same "
        "EMBEDDING_BACKEND"
    )


def test_the_instance_reports_why_it_cannot_serve(bucket, embedder, tmp_path):
    version = read_latest(bucket).version
    _rewrite_manifest(bucket, version, embedding__model="text-embedding-004")
    server = SnapshotServer(
        bucket, tmp_path / "snap", fingerprint=embedder.fingerprint, open_index=KnowledgeIndex
    )
    follower = BucketFollower(
        server, poll_seconds=10, heartbeat_seconds=60, sleep=lambda seconds: None
    )
    with pytest.raises(NotReady, match="text-embedding-004"):
        follower.ensure_ready()
    assert version in server.status()["refused"]
    assert not (tmp_path / "snap" / version).exists()


def test_missing_latest_explains_how_to_publish(tmp_path):
    with pytest.raises(SnapshotError, match="python -m indexer run"):
        read_latest(LocalStorage(tmp_path / "empty")).require()


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "x" * 200])
def test_version_names_are_plain(bucket, bad):
    bucket.write(LATEST, bad.encode())
    with pytest.raises(SnapshotError):
        read_latest(bucket).require()


def _tar_zst(path, members: list[tuple[str, bytes | None]]):
    """A .tar.zst of (name, data) members; data None makes a directory member."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    path.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))
    return path


def test_members_may_come_in_any_order_with_or_without_their_directories(tmp_path):
    archive = _tar_zst(
        tmp_path / "a.tar.zst",
        [
            ("deep/er/file.bin", b"abc"),  # no directory members before it
            ("deep/", None),  # a directory member after its directory exists
            ("other/nested/", None),  # a directory member without its parent's
            ("other/nested/", None),  # twice
        ],
    )
    dest = tmp_path / "existing"
    dest.mkdir()  # extracting into a directory that exists is fine
    safe_extract(archive, dest, expected_bytes=3)
    assert (dest / "deep" / "er" / "file.bin").read_bytes() == b"abc"
    assert (dest / "other" / "nested").is_dir()


def test_an_archive_claiming_more_than_the_cap_is_refused_before_download(bucket, tmp_path):
    version = read_latest(bucket).version
    _rewrite_manifest(bucket, version, archive__bytes=MAX_UNPACKED_BYTES + 1)
    storage = CountingStorage(bucket.root)
    with pytest.raises(SnapshotError) as refused:
        restore(storage, read_manifest(bucket, version), tmp_path / "snap")
    assert str(refused.value) == (
        f"snapshot {version} is an archive of {MAX_UNPACKED_BYTES + 1} bytes, more than the "
        f"{MAX_UNPACKED_BYTES} bytes a snapshot may take"
    )
    assert storage.downloads == 0


def test_a_manifest_claiming_exactly_the_cap_is_within_it(bucket):
    manifest = read_manifest(bucket, read_latest(bucket).version)
    cap = max(manifest.unpacked_bytes, int(manifest.archive["bytes"]))
    check_limits(manifest, cap)  # at the cap: allowed
    with pytest.raises(SnapshotError, match="more than the"):
        check_limits(manifest, cap - 1)
