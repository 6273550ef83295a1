"""The seed's cold start, kept as a baseline: re-embed the knowledge base at start-up.

Served by functions-framework exactly like functions/chat/main.py; the first POST /chat
chunks the corpus, embeds every chunk with the same model, builds a Chroma collection in a
temporary directory, then answers with the offline extractive answerer. Later requests
reuse that index. ``BENCH_REEMBED_CORPUS`` is a knowledge folder or ``generated:<chunks>``.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import flask
import functions_framework

from chatbot.answering.answerers import ExtractiveAnswerer
from chatbot.answering.embeddings import OnnxEmbedder
from chatbot.answering.retrieval import KnowledgeIndex
from indexer.build import embed_chunks
from indexer.collection import build_collection
from indexer.documents import chunk_knowledge

_lock = threading.Lock()
_state: dict = {}


def _index() -> tuple[OnnxEmbedder, KnowledgeIndex]:
    with _lock:
        if not _state:
            spec = os.environ.get("BENCH_REEMBED_CORPUS", "knowledge")
            if spec.startswith("generated:"):
                from bench.corpus import generated_chunks

                chunks = generated_chunks(int(spec.split(":", 1)[1]))
            else:
                chunks, _ = chunk_knowledge(Path(spec))
            embedder = OnnxEmbedder()
            vectors = embed_chunks(embedder, chunks, progress=False)
            path = Path(tempfile.mkdtemp(prefix="romega-reembed-")) / "chroma"
            build_collection(path, chunks, vectors)
            _state.update(embedder=embedder, index=KnowledgeIndex(path))
    return _state["embedder"], _state["index"]


@functions_framework.http
def chat(request: flask.Request) -> flask.Response:
    """POST /chat answered from an index built at start-up."""
    if request.method != "POST" or request.path.rstrip("/") != "/chat":
        return flask.jsonify({"error": "not found"}), 404
    message = (request.get_json(silent=True) or {}).get("message", "")
    embedder, index = _index()
    passages = index.query(embedder.embed([message])[0], 4)
    answer = ExtractiveAnswerer().answer(message, passages)
    return flask.jsonify({"response": answer.text, "status": "success", "sources": answer.sources})
