"""Snapshot integrity: only verified, safely extracted snapshots of the same embedder serve."""

from __future__ import annotations

import io
import json
import tarfile

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
from chatbot.bucket.restore import check_embedder, restore
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
    restored = restore(bucket, manifest, tmp_path / "snap")
    assert restored.path == tmp_path / "snap" / version / "chroma"
    assert (tmp_path / "snap" / version / ".complete").is_file()
    assert not [p for p in (tmp_path / "snap").iterdir() if p.name.startswith(".")]


def test_an_extracted_version_is_reused_without_downloading(bucket, tmp_path):
    storage = CountingStorage(bucket.root)
    version = read_latest(storage).version
    manifest = read_manifest(storage, version)
    restore(storage, manifest, tmp_path / "snap")
    again = restore(storage, manifest, tmp_path / "snap")
    assert storage.downloads == 1
    assert again.timings == {"reused": 1.0}


def test_flipped_bytes_fail_the_sha256_check_and_leave_nothing(bucket, tmp_path):
    version = read_latest(bucket).version
    path = _object_path(bucket, archive_key(version))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="integrity check"):
        restore(bucket, read_manifest(bucket, version), tmp_path / "snap")
    assert list((tmp_path / "snap").iterdir()) == []


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
    with pytest.raises(SnapshotError, match="embedding model 'text-embedding-004'"):
        check_embedder(
            manifest,
            {
                "backend": "local",
                "model": "all-MiniLM-L6-v2-onnx-int8",
                "sha256": manifest.embedding["sha256"],
                "dimension": 384,
            },
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
