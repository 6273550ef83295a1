"""Start-up probes, each run in a fresh interpreter: ``python -m bench.probes NAME ...``.

- ``floor URI``: the cold-start floor: the chat process's imports, then the snapshot's
  bytes read from storage into memory (no parse, no extract), then exit.
- ``imports``: how long each group of the chat process's imports takes, in order.
- ``coldpath URI DIR``: the chat function's cold path step by step, in-process: imports,
  model load, LATEST + manifest, download, verify, extract, open, first query.
- ``overlap URI DIR MODE``: chromadb import, model session, restore and Chroma open, in
  sequence or partly on threads (a what-if).

Each prints one JSON line on stdout.
"""

from __future__ import annotations

import json
import sys
import time

# The chat process imports these before it can answer (main.py at start-up; chromadb,
# onnxruntime and tokenizers lazily on the first request). The GCS client only for gs://.
IMPORT_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("functions_framework + flask + gunicorn", ("functions_framework", "gunicorn.app.base")),
    ("chatbot (main.py's imports)", ("chatbot.config", "chatbot.web")),
    ("chromadb", ("chromadb",)),
    ("onnxruntime + tokenizers", ("onnxruntime", "tokenizers")),
)
GCS_GROUP = ("google-cloud-storage", ("google.cloud.storage", "chatbot.bucket.gcs"))


def _groups(uri: str | None) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return IMPORT_GROUPS + ((GCS_GROUP,) if uri and uri.startswith("gs://") else ())


def _import_all(uri: str | None) -> dict[str, float]:
    import importlib

    timings = {}
    for label, modules in _groups(uri):
        t0 = time.perf_counter()
        for module in modules:
            importlib.import_module(module)
        timings[label] = time.perf_counter() - t0
    return timings


def floor(uri: str) -> dict:
    """Imports plus reading the live snapshot's bytes; nothing is parsed or extracted."""
    from chatbot.bucket.layout import archive_key, read_latest
    from chatbot.bucket.storage import open_storage

    imports = _import_all(uri)
    t0 = time.perf_counter()
    storage = open_storage(uri)
    data, _ = storage.read(archive_key(read_latest(storage).require()))
    return {
        "imports_s": sum(imports.values()),
        "read_s": time.perf_counter() - t0,
        "bytes": len(data),
    }


def imports() -> dict:
    """Per-group import times of the chat process, in the order it imports them."""
    return {"groups_s": _import_all("gs://")}


def coldpath(uri: str, snapshot_dir: str) -> dict:
    """The chat function's cold path with a timer around every step."""
    from pathlib import Path

    steps: dict[str, float] = {}
    for label, seconds in _import_all(uri).items():
        steps[f"import {label}"] = seconds

    from chatbot.answering.answerers import ExtractiveAnswerer
    from chatbot.answering.embeddings import OnnxEmbedder
    from chatbot.answering.retrieval import KnowledgeIndex
    from chatbot.bucket.layout import read_latest, read_manifest
    from chatbot.bucket.restore import check_embedder, restore
    from chatbot.bucket.storage import open_storage

    t0 = time.perf_counter()
    embedder = OnnxEmbedder()
    fingerprint = embedder.fingerprint()
    steps["model load + sha256"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    storage = open_storage(uri)
    manifest = read_manifest(storage, read_latest(storage).require())
    check_embedder(manifest, fingerprint)
    steps["LATEST + manifest"] = time.perf_counter() - t0
    restored = restore(storage, manifest, Path(snapshot_dir))
    for key in ("download", "verify", "extract"):
        steps[key] = restored.timings.get(key, 0.0)
    t0 = time.perf_counter()
    index = KnowledgeIndex(restored.path)
    steps["open chroma"] = time.perf_counter() - t0
    question = "What services do you offer?"
    t0 = time.perf_counter()
    vector = embedder.embed([question])[0]
    steps["first query: embed"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    passages = index.query(vector, 4)
    steps["first query: retrieve"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ExtractiveAnswerer().answer(question, passages)
    steps["first query: answer"] = time.perf_counter() - t0
    index.close()
    return {"steps_s": steps}


OVERLAP_MODES = ("sequential", "session on a thread", "session and chromadb import on threads")


def overlap(uri: str, snapshot_dir: str, mode: str) -> dict:
    """Import chromadb, create the ONNX session, restore, open Chroma: in order or overlapped.

    A what-if for the chat function, which runs these four steps one after the other
    today; the restore itself needs neither chromadb nor the model. ``mode`` is one of
    OVERLAP_MODES.
    """
    import importlib
    import threading
    from pathlib import Path

    from chatbot.answering.embeddings import OnnxEmbedder
    from chatbot.bucket.layout import read_latest, read_manifest
    from chatbot.bucket.restore import restore
    from chatbot.bucket.storage import open_storage

    storage = open_storage(uri)
    manifest = read_manifest(storage, read_latest(storage).require())
    embedder = OnnxEmbedder()
    t0 = time.perf_counter()
    background = []
    if mode != OVERLAP_MODES[0]:
        background.append(threading.Thread(target=embedder.fingerprint))
    if mode == OVERLAP_MODES[2]:
        background.append(threading.Thread(target=importlib.import_module, args=("chromadb",)))
    for thread in background:
        thread.start()
    if mode == OVERLAP_MODES[0]:
        importlib.import_module("chromadb")
        embedder.fingerprint()
    restored = restore(storage, manifest, Path(snapshot_dir))
    for thread in background:
        thread.join()
    from chatbot.answering.retrieval import KnowledgeIndex

    KnowledgeIndex(restored.path).close()
    return {"seconds": time.perf_counter() - t0}


def main(argv: list[str]) -> int:
    """Run the named probe and print its JSON result."""
    name, args = argv[0], argv[1:]
    if name == "floor":
        result = floor(args[0])
    elif name == "imports":
        result = imports()
    elif name == "coldpath":
        result = coldpath(args[0], args[1])
    elif name == "overlap":
        result = overlap(args[0], args[1], args[2])
    else:
        print(f"unknown probe {name!r}", file=sys.stderr)
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
