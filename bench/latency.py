"""Latency: /chat over HTTP on loopback, and its parts in-process.

Over HTTP (one keep-alive connection, requests one after another): a cached answer, an
uncached answer with the offline extractive answerer, and an uncached answer through the
real google-genai client against the fake Gemini at a fixed delay. The chat servers log in
JSON, so the server's own per-request timings (embed, retrieve, generate, total) are read
back from its summary lines and reported next to what the client saw.

In-process: query embedding alone, and ``KnowledgeIndex.query`` alone at every corpus size.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from bench.indexing import BuiltCorpus
from bench.servers import FakeGeminiProcess, HttpClient, bench_env, chat_server
from bench.stats import summarize_ms, time_calls
from chatbot.answering.embeddings import OnnxEmbedder
from chatbot.answering.retrieval import KnowledgeIndex

GEMINI_DELAY = 0.05
ROUNDS = 5


def server_log_fields(log_file: Path, route: str = "/chat") -> list[dict]:
    """The JSON summary lines the chat server wrote for ``route``."""
    rows = []
    for line in log_file.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "request" and entry.get("route") == route:
            rows.append(entry)
    return rows


def _server_side(rows: list[dict]) -> dict:
    out = {}
    for field in ("latency_ms", "embed_ms", "retrieval_ms", "generation_ms"):
        values = [r[field] / 1000 for r in rows if isinstance(r.get(field), int | float)]
        if values:
            out[field.removesuffix("_ms")] = summarize_ms(values)
    return out


def http_series(
    client: HttpClient, questions: list[str], n: int, use_cache: bool
) -> tuple[list[float], list[int]]:
    """``n`` sequential /chat requests cycling through ``questions``."""
    times, statuses = [], []
    for i in range(n):
        status, _, _, seconds = client.chat(questions[i % len(questions)], use_cache=use_cache)
        times.append(seconds)
        statuses.append(status)
    return times, statuses


def _measure_server(
    env: dict[str, str], log_file: Path, series: list[tuple[str, list[str], int, bool]]
) -> dict:
    """Start a chat server, warm it up, then run each (label, questions, n, use_cache)."""
    out = {}
    with chat_server(env, log_file) as server:
        server.wait_up()
        client = server.client()
        for question in series[0][1][:3]:
            client.chat(question)  # cold start and first-use costs stay out of the figures
        for label, questions, n, use_cache in series:
            before = len(server_log_fields(log_file))
            times, statuses = http_series(client, questions, n, use_cache)
            rows = server_log_fields(log_file)[before:]
            out[label] = {
                "client": summarize_ms(times),
                "server": _server_side(rows),
                "non_200": sum(1 for s in statuses if s != 200),
            }
        client.close()
    return out


def run(corpora: list[BuiltCorpus], embedder: OnnxEmbedder, quick: bool, workdir: Path) -> dict:
    """All latency figures."""
    n_http = 150 if quick else 500
    n_uncached = 100 if quick else 300
    n_gemini = 40 if quick else 150
    n_inproc = 60 if quick else 200
    sample = next(c for c in corpora if c.name == "sample")
    questions = sample.questions
    results: dict = {}

    run_dir = workdir / f"latency-{uuid.uuid4().hex[:6]}"
    run_dir.mkdir(parents=True)
    try:
        base = bench_env(
            SNAPSHOT_URI=sample.bucket, SNAPSHOT_DIR=run_dir / "snap-a", LOG_FORMAT="json"
        )
        results["http"] = _measure_server(
            base,
            run_dir / "extractive.log",
            [
                ("cached", questions[:1], n_http, True),
                ("uncached_extractive", questions, n_uncached, False),
            ],
        )
        with FakeGeminiProcess(delay=GEMINI_DELAY) as gemini:
            env = bench_env(
                SNAPSHOT_URI=sample.bucket,
                SNAPSHOT_DIR=run_dir / "snap-b",
                LOG_FORMAT="json",
                GOOGLE_API_KEY="bench-key",
                GEMINI_BASE_URL=gemini.url,
            )
            results["http"].update(
                _measure_server(
                    env,
                    run_dir / "gemini.log",
                    [("uncached_gemini_50ms", questions, n_gemini, False)],
                )
            )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    results["gemini_delay_ms"] = GEMINI_DELAY * 1000

    results["query_embedding"] = embedding_figures(embedder, questions, n_inproc)
    results["retrieval"] = {
        item.name: retrieval_figures(item, embedder, n_inproc) for item in corpora
    }
    return results


def embedding_figures(embedder: OnnxEmbedder, questions: list[str], n: int) -> dict:
    """One question at a time, in ROUNDS rounds; also the best round's p50.

    Like ``timeit``, the best round shows what the code costs on this machine; the other
    rounds add whatever else the (shared) machine was doing at the time.
    """
    embedder.embed(questions[:2])
    per_round = max(1, n // ROUNDS)
    rounds = [
        time_calls(lambda i: embedder.embed([questions[i % len(questions)]]), per_round)
        for _ in range(ROUNDS)
    ]
    return {
        **summarize_ms([t for r in rounds for t in r]),
        "rounds": ROUNDS,
        "best_round_p50_ms": min(summarize_ms(r)["p50_ms"] for r in rounds),
    }


def retrieval_figures(item: BuiltCorpus, embedder: OnnxEmbedder, n: int) -> dict:
    """``KnowledgeIndex.query`` alone, top-4, on ``item``'s Chroma directory."""
    vectors = embedder.embed(item.questions[:50])
    index = KnowledgeIndex(item.chroma_dir)
    try:
        index.query(vectors[0], 4)
        times = time_calls(lambda i: index.query(vectors[i % len(vectors)], 4), n)
        top = [index.query(v, 1)[0].score for v in vectors[:20]]
    finally:
        index.close()
    return {"chunks": item.size, **summarize_ms(times), "top_score_mean": round(sum(top) / 20, 3)}
