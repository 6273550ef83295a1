"""Memory: what a chat instance holds at each corpus size.

On Cloud Functions /tmp is an in-memory file system counted against the function's memory,
so an instance needs its processes' resident memory plus the restored snapshot on disk
(and, while restoring, the downloaded archive too). Each corpus is served by a fresh chat
server; after warm-up queries the peak RSS (VmHWM) and current PSS of the gunicorn arbiter
and its worker are read from /proc, and SNAPSHOT_DIR is measured. The warm-up queries'
latency gives the uncached answer time at each size over HTTP.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from bench.indexing import BuiltCorpus, dir_bytes
from bench.servers import bench_env, chat_server
from bench.stats import summarize_ms

GIB = 1 << 30


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def _pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def measure(item: BuiltCorpus, workdir: Path, warmup: int) -> dict:
    """Serve ``item`` in a fresh process, warm it up, and read its memory."""
    run_dir = workdir / f"memory-{item.name}-{uuid.uuid4().hex[:6]}"
    snapshot_dir = run_dir / "snapshots"
    run_dir.mkdir(parents=True)
    env = bench_env(SNAPSHOT_URI=item.bucket, SNAPSHOT_DIR=snapshot_dir)
    try:
        with chat_server(env, run_dir / "server.log") as server:
            server.wait_up()
            client = server.client(timeout=600)
            status, _, _, first = client.chat(item.questions[0], use_cache=False)
            times, statuses = [], []
            for i in range(1, warmup + 1):
                code, _, _, seconds = client.chat(
                    item.questions[i % len(item.questions)], use_cache=False
                )
                times.append(seconds)
                statuses.append(code)
            client.close()
            pids = server.pids()
            peaks = {pid: _status_kib(pid, "VmHWM") * 1024 for pid in pids}
            pss = sum(_pss_kib(pid) * 1024 for pid in pids)
            on_disk = dir_bytes(snapshot_dir)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    archive = int(item.manifest.archive["bytes"])
    worker_peak = max(peaks.values())
    total_peak = sum(peaks.values()) + on_disk
    return {
        "chunks": item.size,
        "first_request_s": round(first, 3),
        "first_status": status,
        "uncached_http": summarize_ms(times),
        "non_200": sum(1 for s in statuses if s != 200),
        "processes": len(pids),
        "worker_peak_rss_bytes": worker_peak,
        "all_processes_peak_rss_bytes": sum(peaks.values()),
        "pss_bytes": pss,
        "snapshot_dir_bytes": on_disk,
        "restore_transient_bytes": on_disk + archive,
        "total_peak_bytes": total_peak,
        "fits_1_gib": total_peak + archive <= GIB,
    }


def run(corpora: list[BuiltCorpus], quick: bool, workdir: Path) -> dict:
    """Memory at every generated corpus size and for the sample."""
    warmup = 30 if quick else 100
    return {item.name: measure(item, workdir, warmup) for item in corpora}
