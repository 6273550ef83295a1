"""Streaming: how soon a streamed /chat answer starts, and how fast its chunks get through.

Over HTTP on loopback against real chat processes (sample snapshot), every request
``{"stream": true, "use_cache": false}`` so retrieval runs each time. The client reads the
Server-Sent Events line by line from a raw ``http.client`` connection and timestamps the
``event:`` lines as they arrive; t0 is when it sends the request.

- Gemini: the real google-genai client streams from the fake Gemini (its own process), which
  waits FIRST_CHUNK_DELAY before its first chunk and CHUNK_DELAY before each later one. Time to
  ``meta`` (retrieval done, before any Gemini call), time to the first ``delta`` minus the
  fake's first-chunk delay (our overhead before the first chunk is forwarded), and each gap
  between consecutive ``delta`` events minus the fake's chunk delay (the forwarding cost per
  chunk).
- Extractive answerer (no GOOGLE_API_KEY): time to ``meta`` and to ``done``.
- Concurrency: CONCURRENT streams opened at once (one thread and connection each, distinct
  questions) against the Gemini-backed server, after one unmeasured round that gives the
  server's new threads their first use: how many end with ``done``, the wall time, time to
  ``meta`` / ``done`` under that load and the server's own embed and retrieval times (its
  JSON summary lines). Once with functions-framework's default THREADS (4 x CPUs: 8 on a
  2-CPU machine, as terraform's default chat_concurrency) and once with THREADS=CONCURRENT,
  so that no stream waits for a free thread.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path

from bench.indexing import BuiltCorpus
from bench.latency import server_log_fields
from bench.servers import FakeGeminiProcess, bench_env, chat_server
from bench.stats import summarize_ms

FIRST_CHUNK_DELAY = 0.1
CHUNK_DELAY = 0.01
CONCURRENT = 25
WARMUP = 3


@dataclasses.dataclass
class StreamTiming:
    """What one streamed answer looked like from the client; times in seconds from t0."""

    status: int = 0
    meta: float | None = None
    deltas: list[float] = dataclasses.field(default_factory=list)
    done: float | None = None
    error: str | None = None  # an ``error`` event, a non-200 status or a broken connection

    @property
    def first_delta(self) -> float | None:
        return self.deltas[0] if self.deltas else None

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.deltas, self.deltas[1:], strict=False)]


class StreamClient:
    """One keep-alive connection (TCP_NODELAY) reading SSE answers line by line."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self.port = port
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def connect(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            self._conn.connect()
            self._conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def stream(self, message: str) -> StreamTiming:
        """POST one uncached streamed question and time its events."""
        payload = json.dumps({"message": message, "stream": True, "use_cache": False}).encode()
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        timing = StreamTiming()
        conn = self.connect()
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/chat", body=payload, headers=headers)
            response = conn.getresponse()
            timing.status = response.status
            if response.status != 200:
                response.read()
                timing.error = f"status {response.status}"
                return timing
            while True:
                line = response.readline()
                now = time.perf_counter() - t0
                if not line:
                    break
                if not line.startswith(b"event:"):
                    continue
                name = line[6:].strip().decode()
                if name == "meta":
                    timing.meta = now
                elif name == "delta":
                    timing.deltas.append(now)
                elif name == "done":
                    timing.done = now
                elif name == "error":
                    timing.error = "error event"
            if response.getheader("Connection", "").lower() == "close":
                self.close()
        except (OSError, http.client.HTTPException) as exc:
            timing.error = f"{type(exc).__name__}: {exc}"
            self.close()
        if timing.done is None and timing.error is None:
            timing.error = "ended without done"
        return timing


def _summary(values: list[float | None], minus: float = 0.0) -> dict:
    return summarize_ms([v - minus for v in values if v is not None])


def _sequential(port: int, questions: list[str], n: int) -> list[StreamTiming]:
    """Warm up, then ``n`` streams one after another, rotating over ``questions``."""
    client = StreamClient(port)
    try:
        for question in questions[:WARMUP]:
            client.stream(question)  # first-use costs (ONNX session, Gemini connection) stay out
        return [client.stream(questions[i % len(questions)]) for i in range(n)]
    finally:
        client.close()


def _concurrent(port: int, questions: list[str], offset: int) -> tuple[list[StreamTiming], float]:
    """CONCURRENT streams released together; (timings, wall seconds from release to last)."""
    clients = [StreamClient(port) for _ in range(CONCURRENT)]
    for client in clients:
        client.connect()  # connection set-up stays out: t0 is each request's send
    results: list[StreamTiming | None] = [None] * CONCURRENT
    barrier = threading.Barrier(CONCURRENT + 1)

    def worker(slot: int) -> None:
        barrier.wait()
        question = questions[(offset + slot) % len(questions)]
        results[slot] = clients[slot].stream(question)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(CONCURRENT)]
    for thread in threads:
        thread.start()
    barrier.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join(timeout=120)
    wall = time.perf_counter() - t0
    for client in clients:
        client.close()
    return [r or StreamTiming(error="no result") for r in results], wall


def _server_ms(rows: list[dict]) -> dict:
    """p50 of the server's own embed and retrieval time, from its JSON summary lines."""
    out = {}
    for field in ("embed_ms", "retrieval_ms"):
        values = [r[field] / 1000 for r in rows if isinstance(r.get(field), int | float)]
        if values:
            out[field.removesuffix("_ms") + "_p50_ms"] = summarize_ms(values)["p50_ms"]
    return out


def _sequential_figures(timings: list[StreamTiming], gemini: bool) -> dict:
    out = {
        "n": len(timings),
        "completed": sum(1 for t in timings if t.done is not None and t.error is None),
        "errors": sum(1 for t in timings if t.error is not None),
        "meta": _summary([t.meta for t in timings]),
        "done": _summary([t.done for t in timings]),
        "deltas_per_stream": round(sum(len(t.deltas) for t in timings) / max(1, len(timings)), 2),
    }
    if gemini:
        out["first_delta"] = _summary([t.first_delta for t in timings])
        out["first_delta_overhead"] = _summary(
            [t.first_delta for t in timings], minus=FIRST_CHUNK_DELAY
        )
        out["first_delta_after_meta_overhead"] = _summary(
            [
                t.first_delta - t.meta
                for t in timings
                if t.first_delta is not None and t.meta is not None
            ],
            minus=FIRST_CHUNK_DELAY,
        )
        out["chunk_gap_overhead"] = _summary(
            [g for t in timings for g in t.gaps], minus=CHUNK_DELAY
        )
    return out


def _concurrent_figures(rounds: list[tuple[list[StreamTiming], float]], threads: int) -> dict:
    timings = [t for batch, _ in rounds for t in batch]
    return {
        "threads": threads,
        "rounds": len(rounds),
        "streams": len(timings),
        "completed": sum(1 for t in timings if t.done is not None and t.error is None),
        "errors": sorted({t.error for t in timings if t.error is not None}),
        "wall_s": [round(wall, 3) for _, wall in rounds],
        "meta": _summary([t.meta for t in timings]),
        "first_delta": _summary([t.first_delta for t in timings]),
        "done": _summary([t.done for t in timings]),
        "chunk_gap_overhead": _summary([g for t in timings for g in t.gaps], minus=CHUNK_DELAY),
    }


def run(corpora: list[BuiltCorpus], quick: bool, workdir: Path) -> dict:
    """All streaming figures."""
    n = 40 if quick else 100
    rounds = 1 if quick else 3
    sample = next(c for c in corpora if c.name == "sample")
    questions = sample.questions
    default_threads = (os.cpu_count() or 1) * 4  # functions-framework's default THREADS
    results: dict = {
        "first_chunk_delay_ms": FIRST_CHUNK_DELAY * 1000,
        "chunk_delay_ms": CHUNK_DELAY * 1000,
        "concurrent_streams": CONCURRENT,
    }
    run_dir = workdir / f"streaming-{uuid.uuid4().hex[:6]}"
    run_dir.mkdir(parents=True)
    try:
        env = bench_env(
            SNAPSHOT_URI=sample.bucket, SNAPSHOT_DIR=run_dir / "snap-x", LOG_FORMAT="json"
        )
        log = run_dir / "extractive.log"
        with chat_server(env, log) as server:
            server.wait_up()
            timings = _sequential(server.port, questions, n)
        # The summary lines are read once the server has stopped, so every one is written;
        # they come in completion order: the warm-up, then the measured requests.
        results["extractive"] = {
            **_sequential_figures(timings, gemini=False),
            "server": _server_ms(server_log_fields(log)[WARMUP:]),
        }

        with FakeGeminiProcess(
            first_chunk_delay=FIRST_CHUNK_DELAY, chunk_delay=CHUNK_DELAY
        ) as gemini:
            results["concurrent"] = {}
            for label, threads in (("default", None), ("matched", CONCURRENT)):
                env = bench_env(
                    SNAPSHOT_URI=sample.bucket,
                    SNAPSHOT_DIR=run_dir / f"snap-{label}",
                    LOG_FORMAT="json",
                    GOOGLE_API_KEY="bench-key",
                    GEMINI_BASE_URL=gemini.url,
                    **({"THREADS": str(threads)} if threads else {}),
                )
                log = run_dir / f"gemini-{label}.log"
                sequential = n if label == "default" else 0
                with chat_server(env, log) as server:
                    server.wait_up()
                    timings = _sequential(server.port, questions, sequential)
                    _concurrent(server.port, questions, 0)  # warm-up: new threads' first use
                    batches = [
                        _concurrent(server.port, questions, r * CONCURRENT) for r in range(rounds)
                    ]
                rows = server_log_fields(log)[WARMUP:]
                concurrent_rows = rows[sequential + CONCURRENT :]
                if sequential:
                    results["gemini"] = {
                        **_sequential_figures(timings, gemini=True),
                        "server": _server_ms(rows[:sequential]),
                    }
                results["concurrent"][label] = {
                    **_concurrent_figures(batches, threads or default_threads),
                    "server": _server_ms(concurrent_rows),
                }
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return results
