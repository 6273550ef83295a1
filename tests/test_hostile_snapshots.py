"""Hostile snapshots: bombs, bad manifests, corrupt indexes, foreign embedders, truncation.

Whoever can write the bucket controls an archive *and* its manifest. Every hostile snapshot
here is published to a running instance (hot reload: a good one is served, the hostile one
becomes LATEST, the instance polls) and to a fresh one (cold start), and offered to the
admin's activation. It is never served, never answered with a 5xx, restored at most once
(no restore per request or per poll), recorded in ``refused``, and leaves nothing behind in
SNAPSHOT_DIR. The apps are the real stack in-process (tests/conftest.py's ``chat_client``).
"""

from __future__ import annotations

import copy
import io
import json
import logging
import re
import shutil
import struct
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import zstandard

from chatbot.answering.retrieval import KnowledgeIndex
from chatbot.bucket.control import read_heartbeats
from chatbot.bucket.following import COLD_START_BACKOFF
from chatbot.bucket.layout import Manifest, archive_key, manifest_key, read_latest, read_manifest
from chatbot.bucket.publishing import BuiltSnapshot, publish
from chatbot.bucket.restore import MAX_MEMBERS, MAX_UNPACKED_BYTES, restore, safe_extract
from chatbot.bucket.serving import SnapshotServer
from chatbot.bucket.storage import LocalStorage
from chatbot.errors import PreconditionFailed, SnapshotError, StorageError
from chatbot.urls import public_url
from indexer.collection import build_collection, pack
from indexer.documents import Chunk
from tests.publishing import (
    CountingStorage,
    archive_entry,
    point_latest,
    publish_copy,
    publish_raw,
)

QUESTION = "What services do you offer?"
TOKEN = "hostile-admin-token-0b7e3c-5d21f9a8e4b6c07d"
BOMB_BYTES = 5 << 20  # 5 MiB of zeros: compresses to a few hundred bytes
HOSTILE = "20990101T000000Z-hostile"


# -- building hostile snapshots ----------------------------------------------------------------


def tar_zst(dest: Path, files: list[tuple[str, bytes]]) -> Path:
    """A .tar.zst of ``files`` (name, bytes), built in memory."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, payload in files:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(zstandard.ZstdCompressor(level=19).compress(raw.getvalue()))
    return dest


def manifest_bytes(
    built: BuiltSnapshot, version: str, archive: Path, unpacked: int | None = None, **changes
) -> bytes:
    """The built snapshot's manifest for ``archive`` (real sha256 and size), with changes to
    dotted fields written ``a__b``: what an attacker who controls the manifest would publish."""
    data = copy.deepcopy(built.manifest.data)
    data["version"] = version
    data["archive"] = archive_entry(
        archive, built.manifest.unpacked_bytes if unpacked is None else unpacked
    )
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        target = data
        for part in parents:
            target = target[part]
        target[leaf] = value
    return json.dumps(data).encode()


def good_copy(built: BuiltSnapshot, work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(built.archive, work / "good.tar.zst"))


Builder = Callable[[BuiltSnapshot, str, Path], tuple[Path, bytes]]


def bomb(built: BuiltSnapshot, version: str, work: Path) -> tuple[Path, bytes]:
    archive = tar_zst(work / "bomb.tar.zst", [("chroma.sqlite3", bytes(BOMB_BYTES))])
    return archive, manifest_bytes(built, version, archive, unpacked=1024)


def bomb_claiming_its_size(built: BuiltSnapshot, version: str, work: Path) -> tuple[Path, bytes]:
    archive = tar_zst(work / "bomb.tar.zst", [("chroma.sqlite3", bytes(BOMB_BYTES))])
    return archive, manifest_bytes(built, version, archive, unpacked=10 << 30)


def many_files(built: BuiltSnapshot, version: str, work: Path) -> tuple[Path, bytes]:
    files = [(f"f{i:05d}", b"") for i in range(MAX_MEMBERS + 500)]
    archive = tar_zst(work / "many.tar.zst", files)
    return archive, manifest_bytes(built, version, archive, unpacked=0)


def wrong_field(**changes) -> Builder:
    def build(built: BuiltSnapshot, version: str, work: Path) -> tuple[Path, bytes]:
        archive = good_copy(built, work)
        return archive, manifest_bytes(built, version, archive, **changes)

    return build


def garbage_manifest(raw: bytes) -> Builder:
    def build(built: BuiltSnapshot, version: str, work: Path) -> tuple[Path, bytes]:
        return good_copy(built, work), raw

    return build


def corrupt_index(filename: str, mangle: Callable[[bytes], bytes]) -> Builder:
    """The real snapshot, one file of its HNSW segment mangled, repacked by the indexer's
    ``pack``; the manifest's sha256, size and unpacked size all match the new archive."""

    def build(built: BuiltSnapshot, version: str, work: Path) -> tuple[Path, bytes]:
        unpacked = work / "unpacked"
        safe_extract(built.archive, unpacked)
        (target,) = unpacked.glob(f"*/{filename}")
        target.write_bytes(mangle(target.read_bytes()))
        archive = work / "corrupt.tar.zst"
        info = pack(unpacked, archive)
        return archive, manifest_bytes(built, version, archive, unpacked=info["unpacked_bytes"])

    return build


def corrupt_segment(mangle: Callable[[Path], None]) -> Builder:
    """The real snapshot, its HNSW segment directory changed in place by ``mangle``."""

    def build(built: BuiltSnapshot, version: str, work: Path) -> tuple[Path, bytes]:
        unpacked = work / "unpacked"
        safe_extract(built.archive, unpacked)
        (segment,) = (p for p in unpacked.iterdir() if p.is_dir())
        mangle(segment)
        archive = work / "corrupt.tar.zst"
        info = pack(unpacked, archive)
        return archive, manifest_bytes(built, version, archive, unpacked=info["unpacked_bytes"])

    return build


# hnswlib's header.bin (HEADER_FIELDS in hnswalg.h); chatbot/bucket/hnsw.py documents it.
HNSW_HEADER = struct.Struct("<iQQQQQQiIQQQdQ")


def hnsw_header(segment: Path) -> list:
    return list(HNSW_HEADER.unpack((segment / "header.bin").read_bytes()))


def links_out_of_range(segment: Path) -> None:
    """Every level-0 neighbour id (count kept) pointing far past the last element: a search
    reads a record ~1.8 TB past its buffer. Crashed the process with SIGSEGV in the smoke
    query every time, before HNSW files were checked."""
    _, _, _, count, record, *_ = hnsw_header(segment)
    data = bytearray((segment / "data_level0.bin").read_bytes())
    for element in range(count):
        (links,) = struct.unpack_from("<H", data, element * record)
        for j in range(links):
            struct.pack_into("<I", data, element * record + 4 + 4 * j, 0x3FFFFFFF)
    (segment / "data_level0.bin").write_bytes(bytes(data))


def set_header_field(index: int, value: object) -> Callable[[Path], None]:
    def mangle(segment: Path) -> None:
        fields = hnsw_header(segment)
        fields[index] = value
        (segment / "header.bin").write_bytes(HNSW_HEADER.pack(*fields))

    return mangle


def truncated(built: BuiltSnapshot, version: str, work: Path) -> tuple[Path, bytes]:
    data = built.archive.read_bytes()
    work.mkdir(parents=True, exist_ok=True)
    archive = work / "truncated.tar.zst"
    archive.write_bytes(data[: len(data) // 2])
    return archive, manifest_bytes(built, version, archive)


FOREIGN = {"backend": "gemini", "model": "text-embedding-004", "sha256": None, "dimension": 768}


@dataclass(frozen=True)
class Kind:
    build: Builder
    reason: str  # what the refusal must say (a regular expression)


KINDS = {
    "bomb": Kind(bomb, r"unpacks to more than 1024 bytes"),
    "bomb-claiming-10-gib": Kind(
        bomb_claiming_its_size, rf"unpacks to {10 << 30} bytes, more than the {MAX_UNPACKED_BYTES}"
    ),
    "many-files": Kind(many_files, rf"more than {MAX_MEMBERS} members"),
    "sha256-is-a-number": Kind(wrong_field(archive__sha256=12345), r"archive\.sha256 must be str"),
    "chunks-is-null": Kind(wrong_field(counts__chunks=None), r"counts\.chunks must be int"),
    "unpacked-is-a-string": Kind(
        wrong_field(archive__unpacked_bytes="1002888"), r"archive\.unpacked_bytes must be int"
    ),
    "embedding-is-a-string": Kind(wrong_field(embedding="minilm"), r"embedding must be dict"),
    "created-at-is-a-number": Kind(wrong_field(created_at=20260101), r"created_at must be str"),
    "garbage-manifest": Kind(garbage_manifest(b"\x89PNG\r\n\x00\xff{"), r"manifest is not JSON"),
    "manifest-is-a-list": Kind(garbage_manifest(b"[]"), r"must be a JSON object"),
    "deeply-nested-manifest": Kind(garbage_manifest(b"[" * 100_000), r"manifest is not JSON"),
    "corrupt-hnsw-pickle": Kind(
        corrupt_index("index_metadata.pickle", lambda b: b"\x80\x04garbage" * 64),
        r"cannot be opened|smoke query",
    ),
    "corrupt-hnsw-header": Kind(
        corrupt_index("header.bin", lambda b: b"\xff" * len(b)), r"cannot be opened|smoke query"
    ),
    "corrupt-hnsw-vectors": Kind(
        corrupt_index("data_level0.bin", lambda b: bytes(len(b) // 3)),
        r"cannot be opened|smoke query",
    ),
    # Each of these crashed the process (SIGSEGV in Chroma's native search) before the HNSW
    # files were checked ahead of opening them.
    "hnsw-links-out-of-range": Kind(
        corrupt_segment(links_out_of_range), r"data_level0\.bin links to node \d+ of \d+"
    ),
    "hnsw-entry-point-out-of-range": Kind(
        corrupt_segment(set_header_field(8, 0x3FFFFFFF)), r"header\.bin has .* entry point"
    ),
    "hnsw-top-level-too-high": Kind(
        corrupt_segment(set_header_field(7, 1000)), r"header\.bin has top level 1000"
    ),
    "wrong-chunk-count": Kind(wrong_field(counts__chunks=5), r"holds \d+ chunks, manifest says 5"),
    "foreign-embedder": Kind(wrong_field(embedding=FOREIGN), r"built with embedding backend"),
    "truncated-archive": Kind(truncated, r"corrupt or truncated"),
}


def publish_hostile(
    kind: str, storage: LocalStorage, built: BuiltSnapshot, work: Path, *, latest: bool = True
) -> str:
    archive, manifest = KINDS[kind].build(built, HOSTILE, work / "hostile")
    return publish_raw(storage, HOSTILE, archive, manifest, latest=latest)


def entries(directory: Path) -> set[str]:
    """Everything in SNAPSHOT_DIR, hidden partial directories included."""
    return {p.name for p in directory.iterdir()} if directory.exists() else set()


def downloads(caplog, version: str) -> int:
    return sum(
        r.getMessage().startswith(f"Downloading snapshot {version} ") for r in caplog.records
    )


def messages(caplog, prefix: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(prefix)]


# -- the battery: chat instances ---------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_running_instance_refuses_it_and_keeps_serving(
    kind, chat_client, bucket, built_snapshot, tmp_path, caplog
):
    snapshot_dir = tmp_path / "snapshots"
    good = read_latest(bucket).version
    client = chat_client(CONTROL_POLL_SECONDS=3600)  # polls are run explicitly below
    assert client.get("/health").status_code == 200
    assert entries(snapshot_dir) == {good}
    version = publish_hostile(kind, bucket, built_snapshot, tmp_path)
    follower = client.application.function.service.follower
    with caplog.at_level(logging.INFO, logger="chatbot.bucket"):
        follower.poll()
        follower.poll()  # the next interval: the refused version is not tried again
    assert not messages(caplog, "Snapshot poll crashed")
    assert downloads(caplog, version) <= 1
    assert len(messages(caplog, f"Refused snapshot {version}")) == 1

    health = client.get("/health")
    assert health.status_code == 200, health.get_json()
    assert health.get_json()["snapshot"]["version"] == good
    refused = client.application.function.service.snapshots.refused
    assert re.search(KINDS[kind].reason, refused[version]), refused
    answer = client.post("/chat", json={"message": QUESTION, "use_cache": False})
    assert answer.status_code == 200 and answer.get_json()["snapshot"] == good
    assert answer.get_json()["sources"]
    assert entries(snapshot_dir) == {good}
    (beat,) = read_heartbeats(bucket)
    assert version in beat["refused"] and beat["snapshot"] == good


@pytest.mark.parametrize("kind", KINDS)
def test_a_fresh_instance_refuses_it_with_a_503_and_backs_off(
    kind, chat_client, bucket, built_snapshot, tmp_path, caplog
):
    snapshot_dir = tmp_path / "snapshots"
    version = publish_hostile(kind, bucket, built_snapshot, tmp_path)
    client = chat_client()
    with caplog.at_level(logging.INFO, logger="chatbot.bucket"):
        health = client.get("/health")
        answer = client.post("/chat", json={"message": QUESTION})  # within the backoff
    assert health.status_code == 503, health.get_json()
    body = health.get_json()
    assert body["status"] == "unhealthy" and body["snapshot"]["version"] is None
    assert answer.status_code == 503 and int(answer.headers["Retry-After"]) >= 1
    refused = client.application.function.service.snapshots.refused
    assert re.search(KINDS[kind].reason, refused[version]), refused
    # One attempt for both requests: the second was answered from the backoff.
    assert len(messages(caplog, "No snapshot can be served")) == 1
    assert downloads(caplog, version) <= 1
    assert entries(snapshot_dir) == set()


def test_after_the_backoff_a_refused_version_is_not_restored_again_and_a_good_one_recovers(
    chat_client, bucket, built_snapshot, tmp_path, caplog
):
    good = read_latest(bucket).version
    version = publish_hostile("bomb", bucket, built_snapshot, tmp_path)
    client = chat_client()
    with caplog.at_level(logging.INFO, logger="chatbot.bucket"):
        assert client.get("/health").status_code == 503
        time.sleep(COLD_START_BACKOFF + 0.1)
        assert client.get("/health").status_code == 503
        assert len(messages(caplog, "No snapshot can be served")) == 2  # a second attempt...
        assert downloads(caplog, version) == 1  # ...which did not restore the refused one
        point_latest(bucket, good)
        time.sleep(COLD_START_BACKOFF + 0.1)
        assert client.get("/health").status_code == 200
    assert entries(tmp_path / "snapshots") == {good}


# -- the battery: the admin's activation -------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_the_admin_refuses_to_activate_it(kind, admin_app, bucket, built_snapshot, tmp_path):
    latest = read_latest(bucket)
    version = publish_hostile(kind, bucket, built_snapshot, tmp_path, latest=False)
    client = admin_app(ADMIN_TOKEN=TOKEN).test_client()
    response = client.post(
        "/snapshots/activate", json={"version": version}, headers={"X-Admin-Token": TOKEN}
    )
    assert response.status_code == 409, response.get_json()
    error = response.get_json()["error"]
    assert error.startswith(f"Snapshot {version} cannot be activated: ")
    assert re.search(KINDS[kind].reason, error), error
    assert read_latest(bucket) == latest


def test_the_admin_names_both_embedders_when_they_differ(
    admin_app, bucket, built_snapshot, tmp_path
):
    live = read_latest(bucket).version
    version = publish_hostile("foreign-embedder", bucket, built_snapshot, tmp_path, latest=False)
    client = admin_app(ADMIN_TOKEN=TOKEN).test_client()
    response = client.post(
        "/snapshots/activate", json={"version": version}, headers={"X-Admin-Token": TOKEN}
    )
    assert response.status_code == 409
    assert f"backend 'gemini', LATEST ({live}) uses 'local'" in response.get_json()["error"]


# -- extraction limits -------------------------------------------------------------------------


def test_extraction_stops_at_the_member_cap_and_removes_what_it_wrote(tmp_path):
    archive = tar_zst(tmp_path / "a.tar.zst", [(f"f{i}", b"x") for i in range(5)])
    with pytest.raises(SnapshotError, match="more than 3 members"):
        safe_extract(archive, tmp_path / "out", max_members=3)
    assert not (tmp_path / "out").exists()
    safe_extract(archive, tmp_path / "ok", max_members=5, expected_bytes=5)
    assert len(list((tmp_path / "ok").iterdir())) == 5


def test_extraction_counts_written_bytes_against_the_cap(tmp_path):
    archive = tar_zst(tmp_path / "a.tar.zst", [("a", b"x" * 600), ("b", b"y" * 600)])
    with pytest.raises(SnapshotError, match="more than 1000 bytes .*'b'"):
        safe_extract(archive, tmp_path / "out", max_bytes=1000)
    assert not (tmp_path / "out").exists()
    # The manifest's claim is a limit too, and must be exact.
    with pytest.raises(SnapshotError, match="more than 700 bytes"):
        safe_extract(archive, tmp_path / "out", expected_bytes=700)
    with pytest.raises(SnapshotError, match="unpacks to 1200 bytes, its manifest says 5000"):
        safe_extract(archive, tmp_path / "out", expected_bytes=5000)
    assert not (tmp_path / "out").exists()


def test_duplicate_and_hard_linked_members_are_refused(tmp_path):
    archive = tar_zst(tmp_path / "dup.tar.zst", [("a", b"1"), ("a", b"2")])
    with pytest.raises(SnapshotError, match="member twice"):
        safe_extract(archive, tmp_path / "out")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.LNKTYPE, "a"
        tar.addfile(link)
    (tmp_path / "link.tar.zst").write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))
    with pytest.raises(SnapshotError, match="not a regular file"):
        safe_extract(tmp_path / "link.tar.zst", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_huge_member_header_is_refused_before_it_is_read_whole(tmp_path):
    """tarfile reads a pax header into memory at once: the tar stream itself is bounded."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("a/" * (10 << 20) + "x")  # a 20 MiB path in a pax header
        info.size = 1
        tar.addfile(info, io.BytesIO(b"1"))
    archive = tmp_path / "pax.tar.zst"
    archive.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))
    with pytest.raises(SnapshotError, match="more than .* bytes of tar stream"):
        safe_extract(archive, tmp_path / "out", max_members=10, expected_bytes=1)
    assert not (tmp_path / "out").exists()


def test_a_manifest_lying_about_its_unpacked_size_is_refused(bucket, built_snapshot, tmp_path):
    version = publish_hostile("bomb", bucket, built_snapshot, tmp_path)
    assert (bucket.root / archive_key(version)).stat().st_size < 10_000  # compressed tiny
    manifest = read_manifest(bucket, version)
    assert manifest.unpacked_bytes == 1024
    with pytest.raises(SnapshotError, match="unpacks to more than 1024 bytes"):
        restore(bucket, manifest, tmp_path / "snap")
    assert entries(tmp_path / "snap") == set()


def test_a_claim_over_the_cap_is_refused_before_downloading(bucket, tmp_path):
    storage = CountingStorage(bucket.root)
    manifest = read_manifest(storage, read_latest(storage).version)
    with pytest.raises(SnapshotError, match=r"unpacks to \d+ bytes, more than the 1000 bytes"):
        restore(storage, manifest, tmp_path / "snap", max_bytes=1000)
    assert storage.downloads == 0


def test_the_servers_caps_are_injectable_and_a_refusal_leaves_no_directory(
    bucket, embedder, tmp_path
):
    version = read_latest(bucket).version
    server = SnapshotServer(
        bucket,
        tmp_path / "snap",
        fingerprint=embedder.fingerprint,
        open_index=KnowledgeIndex,
        max_members=2,
    )
    with pytest.raises(SnapshotError, match="more than 2 members"):
        server.load(version)
    assert "more than 2 members" in server.refused[version]
    assert entries(tmp_path / "snap") == set()


# -- manifests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"version": 7}, "version must be str"),
        ({"version": "../x"}, "not a plain snapshot name"),
        ({"archive__sha256": 12345}, "archive.sha256 must be str"),
        ({"archive__sha256": "AB" * 32}, "64 lowercase hex"),
        ({"archive__sha256": None}, "archive.sha256 must be str"),
        ({"archive__bytes": -1}, "archive.bytes must be an integer >= 0"),
        ({"archive__bytes": 1.5}, "archive.bytes must be int"),
        ({"archive__unpacked_bytes": True}, "archive.unpacked_bytes must be int"),
        ({"archive": []}, "archive must be dict"),
        ({"counts__chunks": "143"}, "counts.chunks must be int"),
        ({"counts__chunks": -3}, "counts.chunks must be an integer >= 0"),
        ({"counts__documents": "14"}, "counts.documents must be int"),
        ({"counts": None}, "counts must be dict"),
        ({"embedding__model": 384}, "embedding.model must be str"),
        ({"embedding__backend": None}, "embedding.backend must be str"),
        ({"embedding__sha256": 5}, "embedding.sha256 must be str or null"),
        ({"embedding__dimension": "384"}, "embedding.dimension must be int"),
        ({"embedding__dimension": 0}, "embedding.dimension must be an integer >= 1"),
        ({"sources": ["a.md", 3]}, "sources must be a list of strings"),
        ({"chromadb": 1.5}, "chromadb must be str"),
        ({"chunk_hashes": "chunk-hashes.json"}, "chunk_hashes must be dict or null"),
        ({"chunk_hashes__file": "../../etc/passwd"}, "is not a plain file name"),
        ({"chunk_hashes__sha256": "x" * 64}, "chunk_hashes.sha256 must be 64 lowercase hex"),
        ({"chunk_hashes__count": -1}, "chunk_hashes.count must be an integer >= 0"),
    ],
)
def test_every_manifest_field_is_checked_for_its_type(built_snapshot, changes, message):
    raw = manifest_bytes(built_snapshot, built_snapshot.manifest.version, built_snapshot.archive)
    data = json.loads(raw)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        target = data
        for part in parents:
            target = target[part]
        target[leaf] = value
    with pytest.raises(SnapshotError, match=re.escape(message)):
        Manifest.parse(json.dumps(data).encode())


def test_missing_fields_and_non_json_are_refused(built_snapshot):
    data = copy.deepcopy(built_snapshot.manifest.data)
    del data["archive"]["unpacked_bytes"]
    with pytest.raises(SnapshotError, match="archive.unpacked_bytes is missing"):
        Manifest.parse(json.dumps(data).encode())
    for raw in (b"", b"\xff\xfe", b"null", b"[" * 100_000, b"{" + b" " * (2 << 20) + b"}"):
        with pytest.raises(SnapshotError, match="manifest"):
            Manifest.parse(raw)


def test_a_real_manifest_and_a_hosted_embedders_parse(built_snapshot):
    assert Manifest.parse(built_snapshot.manifest.to_bytes()) == built_snapshot.manifest
    hosted = copy.deepcopy(built_snapshot.manifest.data)
    hosted["embedding"] = dict(FOREIGN)
    hosted["created_at"] = None
    assert Manifest.parse(json.dumps(hosted).encode()).embedding["sha256"] is None


# -- serving: what a refusal may delete ----------------------------------------------------------


def test_a_refused_reload_of_a_draining_version_keeps_its_files(
    bucket, built_snapshot, embedder, tmp_path
):
    fingerprint = {"now": embedder.fingerprint()}
    snap = tmp_path / "snap"
    server = SnapshotServer(
        bucket, snap, fingerprint=lambda: fingerprint["now"], open_index=KnowledgeIndex
    )
    v1 = read_latest(bucket).version
    v2 = publish_copy(bucket, built_snapshot, v1 + "-v2", tmp_path / "v2")
    server.load(v1)
    with server.lease() as draining:
        server.load(v2)  # v1 is retired but still leased
        fingerprint["now"] = {**fingerprint["now"], "model": "another-model"}
        with pytest.raises(SnapshotError, match="another-model"):
            server.load(v1)  # a rollback to it is refused...
        assert (snap / v1 / ".complete").is_file()  # ...without deleting the draining files
        assert draining.index.count == built_snapshot.manifest.chunks
    assert entries(snap) == {v2}  # the drained v1 is deleted as usual


# -- publishing ----------------------------------------------------------------------------------


class NoDelete(LocalStorage):
    """A bucket the indexer may write but not delete in, whose manifest write fails."""

    def __init__(self, root, failure: Exception) -> None:
        super().__init__(root)
        self.failure = failure

    def write(self, key, data, *, if_generation_match=None):
        if key.endswith(".json"):
            raise self.failure
        return super().write(key, data, if_generation_match=if_generation_match)

    def delete(self, key):
        raise StorageError(f"{self.uri}/{key}: 403 storage.objects.delete denied")


def test_publish_raises_the_original_error_when_the_cleanup_fails(built_snapshot, tmp_path, caplog):
    storage = NoDelete(tmp_path / "bucket", StorageError("manifest upload: 503 backend error"))
    with caplog.at_level(logging.ERROR, logger="chatbot.bucket.publishing"):
        with pytest.raises(StorageError, match="503 backend error"):
            publish(storage, built_snapshot)
    assert len(messages(caplog, "Could not remove")) == 2  # both deletes tried and logged
    assert read_latest(storage).generation == 0

    lost_race = NoDelete(tmp_path / "bucket2", PreconditionFailed("LATEST moved"))
    with pytest.raises(SnapshotError, match="another publisher.*could not be removed"):
        publish(lost_race, built_snapshot)
    assert lost_race.generation(manifest_key(built_snapshot.manifest.version)) is None


def test_a_snapshot_url_that_is_not_http_is_never_served(tmp_path):
    # The indexer would never write these; whoever can write the bucket can.
    urls = [
        "javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "https://ok.example/p",
    ]
    chunks = [
        Chunk(f"c{i}", f"doc{i}.md", "Title", "", f"text {i}", url) for i, url in enumerate(urls)
    ]
    vectors = np.eye(len(chunks), 8, dtype=np.float32)
    build_collection(tmp_path / "index", chunks, vectors)
    index = KnowledgeIndex(tmp_path / "index")
    try:
        served = {p.source: p.url for p in index.query(vectors[0], len(chunks))}
    finally:
        index.close()
    assert served == {"doc0.md": "", "doc1.md": "", "doc2.md": "https://ok.example/p"}
    assert public_url("http://[::1") == "" and public_url(None) == ""
