"""Build every benchmark corpus into a published snapshot, measuring the indexer's stages.

Per corpus: embedding throughput (chunks/s), the Chroma build (chunks/s), the snapshot size
raw and compressed, pack time, and how much a SQLite ``VACUUM`` before packing would save.
Each snapshot is published to its own local-folder bucket; the other benchmarks serve or
open those.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench import corpus
from chatbot.answering.embeddings import OnnxEmbedder
from chatbot.bucket.layout import Manifest
from chatbot.bucket.publishing import BuiltSnapshot, publish
from chatbot.bucket.storage import LocalStorage
from indexer import documents
from indexer.build import embed_chunks, snapshot_manifest, verify_snapshot
from indexer.collection import build_collection, pack
from indexer.documents import Chunk

ROOT = Path(__file__).resolve().parent.parent
KNOWLEDGE = ROOT / "knowledge"
EVAL_QUESTIONS = ROOT / "eval" / "questions.jsonl"


@dataclass
class BuiltCorpus:
    """A corpus with its published snapshot and the questions to ask it."""

    name: str
    chunks: list[Chunk]
    vectors_real: bool  # every vector came from the model (else see bench.corpus)
    questions: list[str]
    bucket: Path
    chroma_dir: Path  # an opened-once copy for in-process retrieval benchmarks
    archive: Path
    manifest: Manifest
    figures: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.chunks)


def eval_questions() -> list[str]:
    """The evaluation questions about the sample knowledge base."""
    lines = EVAL_QUESTIONS.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["question"] for line in lines if line.strip()]


def dir_bytes(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _manifest(
    name: str, chunks: list[Chunk], fingerprint: dict, archive_info: dict, documents_count: int
) -> Manifest:
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode())
    for chunk in chunks:
        digest.update(f"{chunk.id}\0{chunk.text}\0".encode())
    version = f"bench-{name}-{digest.hexdigest()[:10]}"
    return snapshot_manifest(
        version, chunks, documents_count, fingerprint, archive_info, datetime.now(UTC)
    )


def _vacuum_saving(chroma_dir: Path, scratch: Path) -> dict:
    """Pack a VACUUMed copy: what the snapshot would weigh without SQLite's free pages."""
    copy = scratch / "vacuumed"
    shutil.copytree(chroma_dir, copy)
    try:
        con = sqlite3.connect(copy / "chroma.sqlite3")
        free_pages = con.execute("PRAGMA freelist_count").fetchone()[0]
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        con.execute("VACUUM")
        con.close()
        info = pack(copy, scratch / "vacuumed.tar.zst")
        return {
            "sqlite_free_bytes": free_pages * page_size,
            "raw_bytes": info["unpacked_bytes"],
            "compressed_bytes": info["bytes"],
        }
    finally:
        shutil.rmtree(copy, ignore_errors=True)
        (scratch / "vacuumed.tar.zst").unlink(missing_ok=True)


def build_corpus(
    name: str,
    chunks: list[Chunk],
    vectors: np.ndarray,
    vectors_real: bool,
    documents_count: int,
    questions: list[str],
    embedder: OnnxEmbedder,
    workdir: Path,
    measure_vacuum: bool,
) -> BuiltCorpus:
    """Build, pack, verify and publish one corpus; the figures go into ``BuiltCorpus``."""
    base = workdir / "corpora" / name
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    chroma_dir = base / "chroma"
    t0 = time.perf_counter()
    build_collection(chroma_dir, chunks, vectors)
    build_seconds = time.perf_counter() - t0
    archive = base / "snapshot.tar.zst"
    t0 = time.perf_counter()
    archive_info = pack(chroma_dir, archive)
    pack_seconds = time.perf_counter() - t0
    manifest = _manifest(name, chunks, embedder.fingerprint(), archive_info, documents_count)
    final_archive = base / f"{manifest.version}.tar.zst"
    archive.rename(final_archive)
    built = BuiltSnapshot(manifest, final_archive)
    if vectors_real:
        # The indexer's own check: reopen the packed copy and find a chunk by its vector.
        t0 = time.perf_counter()
        verify_snapshot(built, chunks[0], vectors[0])
        verify_seconds: float | None = time.perf_counter() - t0
    else:
        verify_seconds = None
    built.write_manifest()
    bucket = base / "bucket"
    publish(LocalStorage(bucket), built)
    figures = {
        "chunks": len(chunks),
        "documents": documents_count,
        "vectors": "model" if vectors_real else "model pool + noise",
        "chroma_build_s": round(build_seconds, 3),
        "chroma_chunks_per_s": round(len(chunks) / build_seconds, 1),
        "pack_s": round(pack_seconds, 3),
        "verify_s": round(verify_seconds, 3) if verify_seconds is not None else None,
        "raw_bytes": archive_info["unpacked_bytes"],
        "compressed_bytes": archive_info["bytes"],
        "chroma_dir_bytes": dir_bytes(chroma_dir),
    }
    if measure_vacuum:
        figures["vacuumed"] = _vacuum_saving(chroma_dir, base)
    return BuiltCorpus(
        name=name,
        chunks=chunks,
        vectors_real=vectors_real,
        questions=questions,
        bucket=bucket,
        chroma_dir=chroma_dir,
        archive=final_archive,
        manifest=manifest,
        figures=figures,
    )


def embedding_rate(embedder: OnnxEmbedder, chunks: list[Chunk]) -> tuple[np.ndarray, dict]:
    """Embed ``chunks`` the way the indexer does, timing it."""
    t0 = time.perf_counter()
    vectors = embed_chunks(embedder, chunks, progress=False)
    seconds = time.perf_counter() - t0
    tokens = [len(embedder.tokenizer.encode(c.embedding_text()).ids) for c in chunks]
    return vectors, {
        "chunks": len(chunks),
        "seconds": round(seconds, 3),
        "chunks_per_s": round(len(chunks) / seconds, 2),
        "ms_per_chunk": round(seconds / len(chunks) * 1000, 2),
        "mean_tokens": round(float(np.mean(tokens)), 1),
        "batch_size": embedder.batch_size,
    }


def batch_sweep(chunks: list[Chunk], sizes: tuple[int, ...]) -> list[dict]:
    """ms per chunk at several ONNX batch sizes (same texts, same thread settings)."""
    texts = [c.embedding_text() for c in chunks]
    out = []
    for size in sizes:
        embedder = OnnxEmbedder(batch_size=size)
        embedder.embed(texts[:2])  # load the session outside the timing
        t0 = time.perf_counter()
        embedder.embed(texts)
        seconds = time.perf_counter() - t0
        out.append({"batch_size": size, "ms_per_chunk": round(seconds / len(texts) * 1000, 2)})
    return out


def build_all(quick: bool, workdir: Path, embedder: OnnxEmbedder) -> tuple[list[BuiltCorpus], dict]:
    """Build the sample and generated corpora; returns them and the indexing figures."""
    results: dict = {"corpora": {}}
    built: list[BuiltCorpus] = []

    sample_chunks, sample_docs = documents.chunk_knowledge(KNOWLEDGE)
    vectors, rate = embedding_rate(embedder, sample_chunks)
    results["embedding_sample"] = rate
    sample = build_corpus(
        "sample",
        sample_chunks,
        vectors,
        True,
        sample_docs,
        eval_questions(),
        embedder,
        workdir,
        measure_vacuum=True,
    )
    built.append(sample)

    specs = [s for s in corpus.specs(quick) if s.generated]
    largest = max(s.size for s in specs)
    pool_size = 256 if quick else 1000
    all_chunks = corpus.generated_chunks(largest)
    pool, rate = embedding_rate(embedder, all_chunks[:pool_size])
    results["embedding_generated"] = rate
    results["pool_size"] = pool_size
    if not quick:
        results["batch_sweep"] = batch_sweep(all_chunks[:64], (1, 8, 32))
    vectors = corpus.extend_vectors(pool, largest)
    questions = corpus.generated_questions(400)
    for spec in specs:
        chunks = all_chunks[: spec.size]
        built.append(
            build_corpus(
                spec.name,
                chunks,
                vectors[: spec.size],
                spec.size <= pool_size,
                spec.size // corpus.CHUNKS_PER_DOCUMENT,
                questions,
                embedder,
                workdir,
                measure_vacuum=spec.size <= 10_000,
            )
        )
    for item in built:
        results["corpora"][item.name] = item.figures
    return built, results
