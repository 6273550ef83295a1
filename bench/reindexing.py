"""Republishing: the indexer's embedding pipeline against the bare ONNX session, and the time
to republish after a one-document edit, incremental vs full.

Per size (300 chunks in a quick run; 1k and 10k in a full one) the generated corpus is
written as Markdown (``bench.corpus.write_knowledge``) and published by the indexer's own
code (``build_from_folder`` + ``publish``, what `python -m indexer run --full` runs) into
a local-folder bucket: that wall time is the full republish. Its embedder times each call
of the bare ONNX session (``run_session``), so the session's share of the pipeline
(tokenizing, batching, pooling, hashing, Chroma writes) is measured on the same batches in
the same run; at the smallest size the recorded batches are also replayed through the bare
session alone. Then one document is edited and `python -m indexer run` (incremental, a
new process: interpreter, imports, model load, LATEST's download and all) republishes it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench import corpus
from chatbot.answering.embeddings import OnnxEmbedder
from chatbot.bucket.publishing import publish
from chatbot.bucket.storage import LocalStorage
from indexer.build import build_from_folder

ROOT = Path(__file__).resolve().parent.parent


class TimedEmbedder(OnnxEmbedder):
    """The indexer's embedder, adding up the bare session's time (and keeping its inputs)."""

    def __init__(self, keep_batches: bool) -> None:
        super().__init__()
        self.session_seconds = 0.0
        self.keep_batches = keep_batches
        self.batches: list[dict[str, np.ndarray]] = []

    def run_session(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        started = time.perf_counter()
        hidden = super().run_session(feeds)
        self.session_seconds += time.perf_counter() - started
        if self.keep_batches:
            self.batches.append(feeds)
        return hidden


def bare_session_seconds(embedder: TimedEmbedder) -> float:
    """The recorded batches through the bare session again, alone."""
    started = time.perf_counter()
    for feeds in embedder.batches:
        OnnxEmbedder.run_session(embedder, feeds)
    return time.perf_counter() - started


def edit_one_document(knowledge: Path, round_number: int) -> Path:
    """Append a sentence to the first section of the first document (its title unchanged)."""
    document = sorted(knowledge.rglob("*.md"))[0]
    text = document.read_text(encoding="utf-8")
    first, sep, rest = text.partition("\n\n## ")
    section, sep2, later = rest.partition("\n\n## ")
    edited = f"{section.rstrip()} Edited in round {round_number}."
    document.write_text(first + sep + edited + sep2 + later, encoding="utf-8")
    return document


def incremental_republish(knowledge: Path, bucket: Path, out: Path) -> dict:
    """`python -m indexer run` in a new process; its wall time and printed counts."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"}
    argv = [sys.executable, "-m", "indexer", "run", "--no-progress"]
    argv += ["--knowledge", str(knowledge), "--out", str(out), "--to", str(bucket)]
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    counts = proc.stdout.split("chunks: ", 1)[1].split(")", 1)[0]
    return {"seconds": round(seconds, 2), "counts": counts}


def measure(size: int, workdir: Path, replay: bool) -> dict:
    """Full build of ``size`` generated chunks, then a one-document incremental republish."""
    base = workdir / "reindex" / str(size)
    knowledge, bucket, out = base / "knowledge", base / "bucket", base / "out"
    documents = corpus.write_knowledge(knowledge, size)
    embedder = TimedEmbedder(keep_batches=replay)
    embedder.warm()
    started = time.perf_counter()
    built = build_from_folder(knowledge, embedder, out)
    publish(LocalStorage(bucket), built)
    full_seconds = time.perf_counter() - started
    stages = built.manifest.data["build_seconds"]
    pipeline = stages["embed"] + stages["chroma"]
    figures = {
        "chunks": built.manifest.chunks,
        "documents": documents,
        "full_republish_s": round(full_seconds, 2),
        "pipeline_s": round(pipeline, 2),
        "pipeline_chunks_per_s": round(size / pipeline, 2),
        "session_in_pipeline_s": round(embedder.session_seconds, 2),
        "session_chunks_per_s": round(size / embedder.session_seconds, 2),
        "pipeline_over_session": round(embedder.session_seconds / pipeline, 3),
    }
    if replay:
        bare = bare_session_seconds(embedder)
        figures["bare_session_s"] = round(bare, 2)
        figures["bare_chunks_per_s"] = round(size / bare, 2)
        figures["pipeline_over_bare"] = round(bare / pipeline, 3)
    edit_one_document(knowledge, 1)
    figures["incremental"] = incremental_republish(knowledge, bucket, out)
    return figures


def run(quick: bool, workdir: Path) -> dict:
    """Measure every size of the run; the smallest also replays its batches."""
    sizes = (300,) if quick else (1_000, 10_000)
    return {
        "sizes": {
            f"{size // 1000}k" if size >= 1000 else str(size): measure(
                size, workdir, replay=size == sizes[0]
            )
            for size in sizes
        }
    }
