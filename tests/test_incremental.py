"""Incremental indexing: `indexer run` reuses LATEST's vectors of unchanged chunks, and the
result is the snapshot a `--full` build of the same knowledge gives (indexer/incremental.py)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.eval import load_questions
from chatbot.answering.retrieval import COLLECTION, KnowledgeIndex, open_client
from chatbot.bucket.layout import archive_key, read_latest, read_manifest
from chatbot.bucket.restore import restore
from chatbot.bucket.storage import LocalStorage
from indexer.__main__ import main
from indexer.documents import chunk_knowledge
from indexer.incremental import chunk_hash
from tests.conftest import KNOWLEDGE

COUNTS = re.compile(r"reused (\d+), embedded (\d+), removed (\d+)")
# The same text embedded in another batch (other padding) differs by float rounding only
# (measured: 1.5e-8 at most).
VECTOR_TOLERANCE = 1e-5


def run(capsys, knowledge: Path, bucket: Path, *extra: str) -> tuple[str, tuple[int, ...]]:
    """`python -m indexer run`; returns its output and the (reused, embedded, removed) counts."""
    out = bucket.parent / f"{bucket.name}-out"
    argv = ["run", "--knowledge", str(knowledge), "--out", str(out), "--to", str(bucket)]
    assert main([*argv, "--no-progress", *extra]) == 0
    printed = capsys.readouterr().out
    return printed, tuple(int(n) for n in COUNTS.search(printed).groups())


def records(bucket: Path, tmp: Path) -> dict[str, tuple[str, dict, np.ndarray]]:
    """Every chunk of the bucket's LATEST snapshot: id -> (text, metadata, vector)."""
    storage = LocalStorage(bucket)
    manifest = read_manifest(storage, read_latest(storage).require())
    client = open_client(restore(storage, manifest, tmp).path)
    try:
        got = client.get_collection(COLLECTION).get(
            include=["documents", "metadatas", "embeddings"]
        )
    finally:
        client.close()
    return {
        chunk_id: (text, meta, np.asarray(vector))
        for chunk_id, text, meta, vector in zip(
            got["ids"], got["documents"], got["metadatas"], got["embeddings"], strict=True
        )
    }


def retrieval(bucket: Path, tmp: Path, embedder, k: int = 4) -> list[list[str]]:
    """The top-k passages (source, heading, text) of LATEST for every eval question."""
    storage = LocalStorage(bucket)
    manifest = read_manifest(storage, read_latest(storage).require())
    index = KnowledgeIndex(restore(storage, manifest, tmp).path)
    try:
        vectors = embedder.embed([q for q, _ in load_questions()])
        return [[f"{p.source}|{p.heading}|{p.text}" for p in index.query(v, k)] for v in vectors]
    finally:
        index.close()


def change_knowledge(folder: Path) -> None:
    """An edit, an addition, a deletion and a rename, as a maintainer would make them."""
    pricing = folder / "pricing.md"
    pricing.write_text(
        pricing.read_text().replace("##", "Prices are reviewed every January.\n\n##", 1)
    )
    (folder / "webinars.md").write_text(
        "# Webinars\n\nRomega hosts a monthly webinar on data platforms for customers and "
        "prospects; recordings are sent to everyone who registered.\n"
    )
    (folder / "careers.md").unlink()
    (folder / "help").mkdir()
    (folder / "faq.md").rename(folder / "help" / "faq.md")


def test_an_incremental_build_equals_a_full_build_after_edit_add_delete_rename(
    tmp_path, capsys, embedder
):
    knowledge = tmp_path / "knowledge"
    shutil.copytree(KNOWLEDGE, knowledge)
    printed, (reused, embedded, removed) = run(capsys, knowledge, tmp_path / "incremental")
    assert "full build: nothing is published" in printed and reused == removed == 0
    before, _ = chunk_knowledge(knowledge)
    fingerprint = embedder.fingerprint()
    old_hashes = {chunk_hash(c, fingerprint) for c in before}

    change_knowledge(knowledge)
    printed, counts = run(capsys, knowledge, tmp_path / "incremental")
    after, _ = chunk_knowledge(knowledge)
    new_hashes = {chunk_hash(c, fingerprint) for c in after}
    kept = len(old_hashes & new_hashes)
    assert counts == (kept, len(after) - kept, len(before) - kept), printed
    assert "reused vectors from" in printed
    assert 0 < counts[1] < len(after) / 4  # only the changed documents were embedded
    assert any(c.source == "help/faq.md" for c in after)

    printed, full_counts = run(capsys, knowledge, tmp_path / "full", "--full")
    assert full_counts == (0, len(after), 0) and "full build: reuse was not asked" in printed

    incremental = records(tmp_path / "incremental", tmp_path / "restore-incremental")
    full = records(tmp_path / "full", tmp_path / "restore-full")
    assert incremental.keys() == full.keys() == {c.id for c in after}
    for chunk_id, (text, meta, vector) in full.items():
        other_text, other_meta, other_vector = incremental[chunk_id]
        assert (other_text, other_meta) == (text, meta)
        np.testing.assert_allclose(other_vector, vector, atol=VECTOR_TOLERANCE)
    assert retrieval(tmp_path / "incremental", tmp_path / "q1", embedder) == retrieval(
        tmp_path / "full", tmp_path / "q2", embedder
    )


def test_an_unchanged_knowledge_base_embeds_nothing(tmp_path, capsys):
    knowledge = tmp_path / "knowledge"
    shutil.copytree(KNOWLEDGE, knowledge)
    _, first = run(capsys, knowledge, tmp_path / "bucket")
    printed, again = run(capsys, knowledge, tmp_path / "bucket")
    assert again == (first[1], 0, 0), printed


def test_a_refused_latest_falls_back_to_a_full_build_and_still_publishes(tmp_path, capsys):
    knowledge = tmp_path / "knowledge"
    shutil.copytree(KNOWLEDGE, knowledge)
    bucket = tmp_path / "bucket"
    _, (_, chunks, _) = run(capsys, knowledge, bucket)
    storage = LocalStorage(bucket)
    broken = read_latest(storage).version
    storage.write(archive_key(broken), b"not a snapshot")  # fails its sha256 check
    printed, counts = run(capsys, knowledge, bucket)
    assert counts == (0, chunks, 0)
    assert f"full build: LATEST at {bucket} is unreadable or refused" in printed
    assert "integrity check" in printed
    assert read_latest(storage).version not in (None, broken)


def test_the_manifest_names_and_hashes_the_chunk_hash_file(tmp_path, capsys):
    knowledge = tmp_path / "knowledge"
    shutil.copytree(KNOWLEDGE, knowledge)
    run(capsys, knowledge, tmp_path / "bucket")
    storage = LocalStorage(tmp_path / "bucket")
    manifest = read_manifest(storage, read_latest(storage).require())
    entry = manifest.data["chunk_hashes"]
    assert entry["count"] == manifest.chunks and len(entry["sha256"]) == 64
    assert len(manifest.to_bytes()) < 4096  # the hashes themselves stay out of the manifest
    restored = restore(storage, manifest, tmp_path / "restored")
    hashes = json.loads((restored.path / entry["file"]).read_text())["chunks"]
    assert len(hashes) == manifest.chunks


@pytest.mark.parametrize("field", ["text", "heading", "source", "title"])
def test_the_chunk_hash_covers_text_metadata_and_embedder(field, embedder):
    (chunk, *_), _ = chunk_knowledge(KNOWLEDGE)
    fingerprint = embedder.fingerprint()
    changed = dataclasses.replace(chunk, **{field: getattr(chunk, field) + "!"})
    assert chunk_hash(changed, fingerprint) != chunk_hash(chunk, fingerprint)
    assert chunk_hash(chunk, {**fingerprint, "sha256": "0" * 64}) != chunk_hash(chunk, fingerprint)
