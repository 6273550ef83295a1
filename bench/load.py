"""Throughput: a bounded closed-loop load generator against real chat servers on loopback.

``connections`` threads, each with its own keep-alive connection, send /chat requests back
to back for ``seconds``; requests/s = completed requests / wall time. It runs for cached
answers (one question) and uncached extractive answers (``use_cache: false``), under
functions-framework's gunicorn defaults (WORKERS=1, THREADS=4 x CPUs) and tuned settings.
The generator shares the machine's cores with the server; its own CPU time is reported.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from pathlib import Path

from bench.indexing import BuiltCorpus
from bench.servers import HttpClient, bench_env, chat_server
from bench.stats import summarize_ms


def closed_loop(
    port: int, questions: list[str], use_cache: bool, connections: int, seconds: float
) -> dict:
    """Run the load for ``seconds``; returns throughput, latency and status counts."""
    stop_at = time.perf_counter() + seconds
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections
    start = threading.Barrier(connections + 1)

    def worker(slot: int) -> None:
        client = HttpClient(port, timeout=60)
        start.wait()
        i = slot
        try:
            while time.perf_counter() < stop_at:
                try:
                    status, _, _, elapsed = client.chat(
                        questions[i % len(questions)], use_cache=use_cache
                    )
                except OSError:
                    errors[slot] += 1
                    client.close()
                    continue
                if status == 200:
                    latencies[slot].append(elapsed)
                else:
                    errors[slot] += 1
                i += connections
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in range(connections)]
    for thread in threads:
        thread.start()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join(timeout=seconds + 120)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    done = [x for per in latencies for x in per]
    return {
        "requests": len(done),
        "errors": sum(errors),
        "seconds": round(wall, 2),
        "rps": round(len(done) / wall, 1),
        "latency": summarize_ms(done),
        "generator_cpu_share": round(cpu / wall / (os.cpu_count() or 1), 2),
    }


CONFIGS: dict[str, dict[str, str]] = {
    "default (WORKERS=1, THREADS=4xCPU)": {},
    "WORKERS=2, THREADS=4": {"WORKERS": "2", "THREADS": "4"},
    "WORKERS=1, THREADS=2": {"WORKERS": "1", "THREADS": "2"},
}


def run(corpora: list[BuiltCorpus], quick: bool, workdir: Path) -> dict:
    """Requests/s for cached and uncached answers under each gunicorn configuration."""
    seconds = 3.0 if quick else 10.0
    connections = 8
    sample = next(c for c in corpora if c.name == "sample")
    questions = sample.questions
    configs = dict(list(CONFIGS.items())[:2]) if quick else CONFIGS
    results: dict = {"connections": connections, "cell_seconds": seconds, "configs": {}}
    for label, extra in configs.items():
        run_dir = workdir / f"load-{uuid.uuid4().hex[:6]}"
        run_dir.mkdir(parents=True)
        env = bench_env(SNAPSHOT_URI=sample.bucket, SNAPSHOT_DIR=run_dir / "snap", **extra)
        try:
            with chat_server(env, run_dir / "server.log") as server:
                server.wait_up()
                # Every worker restores and loads its model on its own first request.
                closed_loop(server.port, questions, False, connections, 2.0)
                results["configs"][label] = {
                    "env": extra,
                    "cached": closed_loop(server.port, questions[:1], True, connections, seconds),
                    "uncached_extractive": closed_loop(
                        server.port, questions, False, connections, seconds
                    ),
                }
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
    return results
