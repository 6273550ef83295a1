"""One contract for every Storage: a local folder, and Cloud Storage via fake-gcs-server."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from chatbot.bucket.gcs import GCSStorage
from chatbot.bucket.storage import LocalStorage, Storage, open_storage
from chatbot.errors import ObjectNotFound, PreconditionFailed, StorageError
from harness.fake_gcs import FakeGCSServer

PREFIX = "romega/test"


@pytest.fixture(params=["local", "gcs"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "bucket")
    bucket = request.getfixturevalue("gcs_bucket")
    return GCSStorage.from_uri(f"gs://{bucket}/{PREFIX}")


def test_write_then_read(store: Storage) -> None:
    generation = store.write("LATEST", b"v1")
    assert store.read("LATEST") == (b"v1", generation)
    assert store.generation("LATEST") == generation


def test_each_write_makes_a_new_generation(store: Storage) -> None:
    first = store.write("control/cache-epoch", b"1")
    second = store.write("control/cache-epoch", b"2")
    assert second != first
    assert store.read("control/cache-epoch") == (b"2", second)


def test_missing_objects(store: Storage, tmp_path: Path) -> None:
    assert store.generation("nope") is None
    with pytest.raises(ObjectNotFound):
        store.read("nope")
    with pytest.raises(ObjectNotFound):
        store.download("snapshots/nope.tar.zst", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_create_only_refuses_an_existing_object(store: Storage) -> None:
    store.write("snapshots/v1.json", b"{}", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        store.write("snapshots/v1.json", b"{overwritten}", if_generation_match=0)
    assert store.read("snapshots/v1.json")[0] == b"{}"


def test_a_stale_generation_is_refused(store: Storage) -> None:
    first = store.write("LATEST", b"v1", if_generation_match=0)
    second = store.write("LATEST", b"v2", if_generation_match=first)
    with pytest.raises(PreconditionFailed):
        store.write("LATEST", b"v3", if_generation_match=first)
    assert store.read("LATEST") == (b"v2", second)


def test_only_one_of_racing_writers_wins(store: Storage) -> None:
    generation = store.write("LATEST", b"v0")
    outcomes: list[str] = []

    def publish(n: int) -> None:
        try:
            store.write("LATEST", f"v{n}".encode(), if_generation_match=generation)
            outcomes.append("won")
        except PreconditionFailed:
            outcomes.append("lost")

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(1, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["lost"] * 5 + ["won"]


def test_upload_and_download_files(store: Storage, tmp_path: Path) -> None:
    src = tmp_path / "snapshot.tar.zst"
    src.write_bytes(os.urandom(300_000))
    generation = store.upload("snapshots/v1.tar.zst", src, if_generation_match=0)
    dest = tmp_path / "restored.tar.zst"
    assert store.download("snapshots/v1.tar.zst", dest) == generation
    assert dest.read_bytes() == src.read_bytes()
    with pytest.raises(PreconditionFailed):
        store.upload("snapshots/v1.tar.zst", src, if_generation_match=0)


def test_create_only_holds_for_large_files(store: Storage, tmp_path: Path) -> None:
    src = tmp_path / "big.tar.zst"  # over 8 MiB: google-cloud-storage sends a resumable upload
    src.write_bytes(os.urandom(9 * 1024 * 1024))
    generation = store.upload("snapshots/big.tar.zst", src, if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        store.upload("snapshots/big.tar.zst", src, if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        store.write("snapshots/big.tar.zst", src.read_bytes(), if_generation_match=generation + 1)
    assert store.generation("snapshots/big.tar.zst") == generation


def test_list_is_sorted_and_relative(store: Storage) -> None:
    for key in ["snapshots/v2.json", "snapshots/v1.json", "LATEST", "control/cache-epoch"]:
        store.write(key, b"x")
    assert store.list("snapshots") == ["snapshots/v1.json", "snapshots/v2.json"]
    assert store.list("snapshots/") == ["snapshots/v1.json", "snapshots/v2.json"]
    assert store.list("") == [
        "LATEST",
        "control/cache-epoch",
        "snapshots/v1.json",
        "snapshots/v2.json",
    ]
    assert store.list("snap") == []  # a folder, not a string prefix
    assert store.list("nothing-here") == []


def test_delete(store: Storage) -> None:
    store.write("control/instances/a.json", b"{}")
    store.delete("control/instances/a.json")
    store.delete("control/instances/a.json")  # already gone: fine
    assert store.generation("control/instances/a.json") is None
    assert store.list("control") == []


def test_keys_cannot_escape_the_store(store: Storage) -> None:
    with pytest.raises(StorageError):
        store.write("../outside", b"x")


# -- Cloud Storage specifics ---------------------------------------------------------------


def test_gcs_keys_live_under_the_prefix(gcs_bucket: str) -> None:
    from google.cloud import storage

    GCSStorage.from_uri(f"gs://{gcs_bucket}/{PREFIX}/").write("LATEST", b"v1")
    names = [blob.name for blob in storage.Client().list_blobs(gcs_bucket)]
    assert names == [f"{PREFIX}/LATEST"]


def test_gcs_uri_parsing() -> None:
    store = GCSStorage.from_uri("gs://my-bucket/a/b/")
    assert (store.bucket_name, store.prefix, store.uri) == (
        "my-bucket",
        "a/b",
        "gs://my-bucket/a/b",
    )
    assert GCSStorage.from_uri("gs://my-bucket").uri == "gs://my-bucket"
    assert isinstance(open_storage("gs://my-bucket/x"), GCSStorage)
    with pytest.raises(StorageError):
        GCSStorage.from_uri("gs:///prefix-without-bucket")


def test_gcs_missing_bucket_is_a_storage_error(
    fake_gcs: FakeGCSServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.url)
    store = GCSStorage("no-such-bucket-here")
    with pytest.raises(StorageError) as caught:
        store.write("LATEST", b"v1")
    assert not isinstance(caught.value, ObjectNotFound)
    with pytest.raises(ObjectNotFound):
        store.read("LATEST")


def test_gcs_unreachable_is_a_storage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeGCSServer() as server:
        url = server.url
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)  # nothing listens there any more
    store = GCSStorage("bucket", retry_deadline=0.5, timeout=1.0)
    with pytest.raises(StorageError):
        store.read("LATEST")
