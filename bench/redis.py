"""Shared state on Redis: what the Redis path costs, and how exact the fleet's limit is.

A real redis-server on loopback (harness/redis.py). Over HTTP, one keep-alive connection:
the cached and the uncached (extractive) answer with REDIS_URL, and the same without it on
an identical server, so the Redis path's overhead is the difference of the p50s (limits,
epoch, lookup, flight lock and store: a few round trips). Exactness: two chat processes
share one Redis with the default 20/minute, and 25 concurrent requests from one client
address are spread over both: the passed and 429 counts.
"""

from __future__ import annotations

import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.indexing import BuiltCorpus
from bench.latency import _measure_server
from bench.servers import FunctionProcess, bench_env, chat_server
from harness.processes import request
from harness.redis import RedisServer, redis_server_missing

CONCURRENT = 25
LIMIT = "20/minute"


def _latency(sample: BuiltCorpus, run_dir: Path, n: int, redis_url: str | None) -> dict:
    """Cached and uncached p50 on one server, with or without REDIS_URL."""
    label = "redis" if redis_url else "memory"
    env = bench_env(
        SNAPSHOT_URI=sample.bucket,
        SNAPSHOT_DIR=run_dir / f"snap-{label}",
        LOG_FORMAT="json",
        **({"REDIS_URL": redis_url} if redis_url else {}),
    )
    questions = sample.questions
    return _measure_server(
        env,
        run_dir / f"{label}.log",
        [("cached", questions[:1], n, True), ("uncached_extractive", questions, n // 2, False)],
    )


def _exactness(sample: BuiltCorpus, run_dir: Path, redis_url: str) -> dict:
    """25 concurrent requests from one address over two instances sharing Redis."""
    chats: list[FunctionProcess] = []
    try:
        for name in ("a", "b"):
            env = {
                **bench_env(SNAPSHOT_URI=sample.bucket, SNAPSHOT_DIR=run_dir / f"snap-{name}"),
                "RATE_LIMIT_CHAT": LIMIT,
                "REDIS_URL": redis_url,
            }
            chats.append(chat_server(env, run_dir / f"exact-{name}.log").start())
        for chat in chats:
            chat.wait_healthy()

        def ask(i: int) -> tuple[int, bool]:
            url = f"{chats[i % 2].url}/chat"
            status, _, headers = request("POST", url, {"message": f"question {i}"})
            return status, "Retry-After" in headers

        with ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
            outcomes = list(pool.map(ask, range(CONCURRENT)))
    finally:
        for chat in chats:
            chat.stop()
    refused = [with_header for status, with_header in outcomes if status == 429]
    return {
        "limit": LIMIT,
        "requests": CONCURRENT,
        "instances": len(chats),
        "passed": sum(1 for status, _ in outcomes if status == 200),
        "rate_limited": len(refused),
        "rate_limited_with_retry_after": sum(refused),
        "other": sum(1 for status, _ in outcomes if status not in (200, 429)),
    }


def run(corpora: list[BuiltCorpus], quick: bool, workdir: Path) -> dict:
    """Cached and uncached p50 with and without Redis, and the fleet limit's exactness."""
    missing = redis_server_missing()
    if missing is not None:
        raise RuntimeError(missing)
    n = 150 if quick else 500
    sample = next(c for c in corpora if c.name == "sample")
    run_dir = workdir / f"redis-{uuid.uuid4().hex[:6]}"
    run_dir.mkdir(parents=True)
    try:
        with RedisServer(run_dir / "redis.log") as redis_server:
            with_redis = _latency(sample, run_dir, n, redis_server.url)
            without = _latency(sample, run_dir, n, None)
            exactness = _exactness(sample, run_dir, redis_server.url)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)

    def p50(figures: dict, key: str) -> float:
        return figures[key]["client"]["p50_ms"]

    return {
        "with_redis": with_redis,
        "without_redis": without,
        "cached_p50_ms": p50(with_redis, "cached"),
        "cached_overhead_p50_ms": round(p50(with_redis, "cached") - p50(without, "cached"), 3),
        "uncached_overhead_p50_ms": round(
            p50(with_redis, "uncached_extractive") - p50(without, "uncached_extractive"), 3
        ),
        "exactness": exactness,
    }
