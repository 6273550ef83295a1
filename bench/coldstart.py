"""Cold start: a new process to its first /chat answer, against the two reference points.

- **restore**: functions/chat/main.py under functions-framework, restoring the published
  snapshot from a local-folder bucket or from fake-gcs-server through the GCS backend,
  into a fresh SNAPSHOT_DIR each run so nothing is reused.
- **re-embed** (the seed's "before"): bench/reembed_main.py under functions-framework,
  which chunks, embeds and indexes the corpus on its first request, then answers.
- **floor**: a fresh interpreter doing the same imports and reading the snapshot's bytes
  from the same storage, without parsing them (bench/probes.py ``floor``).

Where the restore's time goes comes from a step-timed probe of the same cold path
(bench/probes.py ``coldpath``) and from the server's "Serving snapshot" log line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.indexing import BuiltCorpus
from bench.probes import OVERLAP_MODES
from bench.servers import ROOT, bench_env, chat_server, child_env
from bench.stats import median
from chatbot.bucket.gcs import GCSStorage
from chatbot.bucket.publishing import BuiltSnapshot, publish
from harness.fake_gcs import FakeGCSServer

QUESTION = "What services does Romega Solutions offer?"


@contextmanager
def emulator_env(server: FakeGCSServer) -> Iterator[None]:
    """Point this process's google-cloud-storage client at fake-gcs-server for a while."""
    old = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = server.url
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = old


def publish_to_gcs(server: FakeGCSServer, item: BuiltCorpus) -> str:
    """Publish ``item``'s snapshot to a new bucket on the fake server; returns its URI."""
    bucket = f"bench-{item.name}-{uuid.uuid4().hex[:8]}"
    server.create_bucket(bucket)
    uri = f"gs://{bucket}/chatbot"
    with emulator_env(server):
        publish(GCSStorage.from_uri(uri), BuiltSnapshot(item.manifest, item.archive))
    return uri


def _fresh_dir(workdir: Path, label: str) -> Path:
    path = workdir / "coldstart" / f"{label}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path


def restore_run(uri: str, workdir: Path, extra_env: dict[str, str]) -> dict:
    """One cold start of the chat function: spawn -> listening -> first /chat answer."""
    run_dir = _fresh_dir(workdir, "restore")
    env = bench_env(
        SNAPSHOT_URI=uri, SNAPSHOT_DIR=run_dir / "snapshots", LOG_FORMAT="json", **extra_env
    )
    server = chat_server(env, run_dir / "server.log")
    try:
        server.start()
        up = server.wait_up()
        client = server.client()
        status, _, _, _ = client.chat(QUESTION)
        first = time.perf_counter() - server.started_at
        client.close()
    finally:
        server.stop()
        restore = _restore_seconds(server.log())
        shutil.rmtree(run_dir, ignore_errors=True)
    return {"up_s": up, "first_answer_s": first, "status": status, "restore_s": restore}


def _restore_seconds(log: str) -> dict:
    """The restore's step timings, from the instance's "Serving snapshot" JSON log line."""
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if str(entry.get("message", "")).startswith("Serving snapshot"):
            return entry.get("restore_seconds", {})
    return {}


def reembed_run(corpus_spec: str, workdir: Path) -> dict:
    """One cold start of the re-embedding baseline."""
    run_dir = _fresh_dir(workdir, "reembed")
    env = bench_env(BENCH_REEMBED_CORPUS=corpus_spec, TMPDIR=run_dir)
    server = chat_server(env, run_dir / "server.log", source=ROOT / "bench" / "reembed_main.py")
    try:
        server.start()
        up = server.wait_up()
        client = server.client(timeout=1800)
        status, _, _, _ = client.chat(QUESTION)
        first = time.perf_counter() - server.started_at
        client.close()
    finally:
        server.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    return {"up_s": up, "first_answer_s": first, "status": status}


def probe(args: list[str], extra_env: dict[str, str]) -> tuple[float, dict]:
    """Run ``python -m bench.probes ...``: (seconds from spawn to its JSON line, the JSON)."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "bench.probes", *args],
        env=child_env(**extra_env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    elapsed = time.perf_counter() - t0
    return elapsed, json.loads(out.stdout.strip().splitlines()[-1])


def interpreter_seconds(repeats: int) -> float:
    """Median start-up of a bare interpreter (``python -c pass``)."""
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        runs.append(time.perf_counter() - t0)
    return median(runs)


def _measure_target(
    item: BuiltCorpus, storage: str, uri: str, env: dict[str, str], repeats: int, workdir: Path
) -> dict:
    """Restore and floor runs, and three step-timed probes (medians per step) of ``item``."""
    # Interleaved, so a burst of load from elsewhere on the machine hits both sides alike.
    restores, floors = [], []
    for _ in range(repeats):
        restores.append(restore_run(uri, workdir, env))
        floors.append(probe(["floor", uri], env)[0])
    probes = []
    for _ in range(3):
        path_dir = _fresh_dir(workdir, "coldpath")
        try:
            probes.append(probe(["coldpath", uri, str(path_dir / "snapshots")], env)[1])
        finally:
            shutil.rmtree(path_dir, ignore_errors=True)
    steps = {k: median([p["steps_s"][k] for p in probes]) for k in probes[0]["steps_s"]}
    restore_median = median([r["first_answer_s"] for r in restores])
    floor_median = median(floors)
    return {
        "corpus": item.name,
        "chunks": item.size,
        "storage": storage,
        "restore_runs_s": [round(r["first_answer_s"], 3) for r in restores],
        "restore_median_s": round(restore_median, 3),
        "listening_median_s": round(median([r["up_s"] for r in restores]), 3),
        "statuses": sorted({r["status"] for r in restores}),
        "health_restore_s": restores[-1]["restore_s"],
        "floor_runs_s": [round(f, 3) for f in floors],
        "floor_median_s": round(floor_median, 3),
        "restore_over_floor": round(restore_median / floor_median, 2),
        "best_restore_over_best_floor": round(
            min(r["first_answer_s"] for r in restores) / min(floors), 2
        ),
        "steps_s": {k: round(v, 4) for k, v in steps.items()},
    }


def overlap_what_if(item: BuiltCorpus, repeats: int, workdir: Path) -> dict:
    """chromadb import + model session + restore + open of ``item``, in order vs overlapped."""
    runs: dict[str, list[float]] = {mode: [] for mode in OVERLAP_MODES}
    for _ in range(max(repeats, 3)):
        for mode in runs:
            run_dir = _fresh_dir(workdir, "overlap")
            try:
                _, out = probe(["overlap", str(item.bucket), str(run_dir / "snap"), mode], {})
            finally:
                shutil.rmtree(run_dir, ignore_errors=True)
            runs[mode].append(out["seconds"])
    return {
        "corpus": item.name,
        "storage": "local",
        "median_s": {mode: round(median(values), 3) for mode, values in runs.items()},
    }


def reembed_estimate(item: BuiltCorpus, floor_s: float, indexing: dict) -> float:
    """Seconds a re-embedding start-up would take: imports + embedding + Chroma build."""
    rate = indexing["embedding_generated"]["ms_per_chunk"] / 1000
    build = indexing["corpora"][item.name]["chroma_build_s"]
    return floor_s + item.size * rate + build


def run(corpora: list[BuiltCorpus], indexing: dict, quick: bool, workdir: Path) -> dict:
    """Cold-start figures for the sample and (full run) the 1k and 10k corpora."""
    repeats = 1 if quick else 5
    names = ["sample"] if quick else ["sample", "1k", "10k"]
    targets = [c for c in corpora if c.name in names]
    by_name = {c.name: c for c in corpora}
    results: dict = {
        "repeats": repeats,
        "interpreter_s": round(interpreter_seconds(3), 3),
        "runs": [],
        "reembed": [],
    }
    with FakeGCSServer(log_file=workdir / "fake-gcs.log") as gcs:
        for item in targets:
            local_uri = str(item.bucket)
            results["runs"].append(_measure_target(item, "local", local_uri, {}, repeats, workdir))
            gcs_uri = publish_to_gcs(gcs, item)
            results["runs"].append(
                _measure_target(item, "gcs", gcs_uri, gcs.env(), repeats, workdir)
            )
    results["overlap"] = overlap_what_if(targets[-1], repeats, workdir)
    results["imports_s"] = {
        k: round(v, 4) for k, v in probe(["imports"], {})[1]["groups_s"].items()
    }

    measured = {"sample": (str(ROOT / "knowledge"), repeats)}
    if not quick and "1k" in by_name:
        measured["1k"] = ("generated:1000", 1)
    for name, (spec, count) in measured.items():
        runs = [reembed_run(spec, workdir) for _ in range(count)]
        results["reembed"].append(
            {
                "corpus": name,
                "chunks": by_name[name].size,
                "measured": True,
                "runs_s": [round(r["first_answer_s"], 3) for r in runs],
                "median_s": round(median([r["first_answer_s"] for r in runs]), 3),
                "statuses": sorted({r["status"] for r in runs}),
            }
        )
    for item in targets:
        if item.name in measured:
            continue
        local = next(r for r in results["runs"] if r["corpus"] == item.name)
        results["reembed"].append(
            {
                "corpus": item.name,
                "chunks": item.size,
                "measured": False,
                "median_s": round(reembed_estimate(item, local["floor_median_s"], indexing), 3),
            }
        )
    reembed = {r["corpus"]: r["median_s"] for r in results["reembed"]}
    for row in results["runs"]:
        if row["corpus"] in reembed:
            row["reembed_over_restore"] = round(reembed[row["corpus"]] / row["restore_median_s"], 1)
    return results
