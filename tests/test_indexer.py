"""The indexer CLI and publishing: verified snapshots, LATEST written last, one winner per race."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading

import pytest

from chatbot.bucket.layout import LATEST, archive_key, manifest_key, read_latest
from chatbot.bucket.publishing import BuiltSnapshot, activate, publish
from chatbot.bucket.storage import LocalStorage
from chatbot.errors import SnapshotError
from indexer.__main__ import main
from tests.conftest import KNOWLEDGE, ROOT


def test_manifest_records_what_a_reader_must_check(built_snapshot):
    m = built_snapshot.manifest.data
    assert m["embedding"]["model"] == "all-MiniLM-L6-v2-onnx-int8"
    assert m["embedding"]["dimension"] == 384 and len(m["embedding"]["sha256"]) == 64
    assert m["counts"]["documents"] >= 10 and m["counts"]["chunks"] > 50
    assert m["archive"]["bytes"] == built_snapshot.archive.stat().st_size
    assert m["chromadb"] and m["created_at"] and "pricing.md" in m["sources"]
    assert m["chunking"]["chunk_words"] > m["chunking"]["overlap_words"] > 0


def test_publish_writes_immutable_objects_then_latest(tmp_path, built_snapshot):
    storage = LocalStorage(tmp_path / "bucket")
    version = publish(storage, built_snapshot)
    assert read_latest(storage).version == version
    assert storage.generation(archive_key(version)) == 1
    with pytest.raises(SnapshotError, match="already published"):
        publish(storage, built_snapshot)
    assert read_latest(storage).version == version


def test_two_racing_publishers_have_exactly_one_winner(tmp_path, built_snapshot):
    storage = LocalStorage(tmp_path / "bucket")
    # A second snapshot under a later version name, as a build of edited knowledge would be.
    other_version = built_snapshot.manifest.version + "b"
    other_archive = tmp_path / f"{other_version}.tar.zst"
    shutil.copyfile(built_snapshot.archive, other_archive)
    other = BuiltSnapshot(built_snapshot.manifest.renamed(other_version), other_archive)

    barrier = threading.Barrier(2)
    results: dict[str, object] = {}
    original_upload = storage.upload

    def slow_upload(key, src, **kw):  # both publishers read LATEST before either swaps it
        out = original_upload(key, src, **kw)
        if key.endswith(".tar.zst"):
            barrier.wait(timeout=10)
        return out

    storage.upload = slow_upload

    def run(name, built):
        try:
            results[name] = publish(storage, built)
        except SnapshotError as exc:
            results[name] = exc

    threads = [
        threading.Thread(target=run, args=(n, b)) for n, b in (("a", built_snapshot), ("b", other))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    winners = [v for v in results.values() if isinstance(v, str)]
    losers = [v for v in results.values() if isinstance(v, SnapshotError)]
    assert len(winners) == 1 and len(losers) == 1
    assert "another publisher" in str(losers[0])
    assert read_latest(storage).version == winners[0]
    loser_version = ({built_snapshot.manifest.version, other_version} - set(winners)).pop()
    assert storage.generation(archive_key(loser_version)) is None  # nothing half-published
    assert storage.generation(manifest_key(loser_version)) is None


def test_activate_rolls_back_and_refuses_unknown_versions(tmp_path, built_snapshot):
    storage = LocalStorage(tmp_path / "bucket")
    version = publish(storage, built_snapshot)
    storage.write(LATEST, b"somethingelse\n")
    assert activate(storage, version).version == version
    assert read_latest(storage).version == version
    with pytest.raises(SnapshotError, match="no manifest"):
        activate(storage, "20990101T000000Z-nothere")


def test_cli_build_then_publish(tmp_path):
    out = tmp_path / "out"
    bucket = tmp_path / "bucket"
    assert main(["build", "--knowledge", str(KNOWLEDGE), "--out", str(out), "--no-progress"]) == 0
    (archive,) = out.glob("*.tar.zst")
    manifest = json.loads(archive.with_name(archive.name.replace(".tar.zst", ".json")).read_text())
    assert main(["publish", str(archive), "--to", str(bucket)]) == 0
    assert read_latest(LocalStorage(bucket)).version == manifest["version"]


def test_cli_reports_errors_without_a_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "indexer",
            "run",
            "--knowledge",
            str(tmp_path / "missing"),
            "--to",
            str(tmp_path / "bucket"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
