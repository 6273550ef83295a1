"""`python -m bench [--quick] [--only NAME]`: run the benchmarks, write docs/benchmarks.md.

Order: build every corpus (the others need the snapshots; `--only reindex` builds its own),
then cold start, latency, streaming, throughput, memory, resilience, shared state on Redis,
insights, reindexing and the widget. Results go to bench/results.json and docs/benchmarks.md.
A benchmark that crashes is reported as such; the command still exits 0.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import (
    coldstart,
    indexing,
    insights,
    latency,
    load,
    memory,
    redis,
    reindexing,
    report,
    resilience,
    streaming,
    widget,
)
from bench.servers import clear_config_environment
from chatbot.answering.embeddings import OnnxEmbedder

SECTIONS = (
    "coldstart",
    "latency",
    "streaming",
    "throughput",
    "memory",
    "resilience",
    "redis",
    "insights",
    "reindex",
    "widget",
)
NO_CORPORA = {"reindex", "widget"}  # sections that build their own corpus, or need none


def _say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller corpora, fewer requests")
    parser.add_argument("--only", choices=SECTIONS, help="run one benchmark (corpora are built)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    clear_config_environment()  # a developer's GOOGLE_API_KEY or SNAPSHOT_URI must not leak in

    started = time.perf_counter()
    results: dict = {
        "mode": "quick" if args.quick else "full",
        "command": "make bench-quick" if args.quick else "make bench",
        "machine": report.machine_info(),
        "sections": {},
        "errors": {},
    }
    workdir = Path(tempfile.mkdtemp(prefix="romega-bench-"))
    embedder = OnnxEmbedder()
    try:
        corpora: list[indexing.BuiltCorpus] = []
        figures: dict = {}
        if args.only not in NO_CORPORA:
            _say(f"building corpora ({results['mode']} mode) in {workdir}")
            t0 = time.perf_counter()
            corpora, figures = indexing.build_all(args.quick, workdir, embedder)
            figures["section_seconds"] = round(time.perf_counter() - t0, 1)
            figures["load_average_after"] = report.load_average()
            results["sections"]["indexing"] = figures
        runners: dict[str, Callable[[], dict]] = {
            "coldstart": lambda: coldstart.run(corpora, figures, args.quick, workdir),
            "latency": lambda: latency.run(corpora, embedder, args.quick, workdir),
            "streaming": lambda: streaming.run(corpora, args.quick, workdir),
            "throughput": lambda: load.run(corpora, args.quick, workdir),
            "memory": lambda: memory.run(
                [c for c in corpora if c.name != "sample"], args.quick, workdir
            ),
            "resilience": lambda: resilience.run(corpora, args.quick, workdir),
            "redis": lambda: redis.run(corpora, args.quick, workdir),
            "insights": lambda: insights.run(corpora, args.quick, workdir),
            "reindex": lambda: reindexing.run(args.quick, workdir),
            "widget": lambda: widget.run(args.quick, workdir),
        }
        for name in SECTIONS:
            if args.only and name != args.only:
                continue
            _say(f"{name} ...")
            t0 = time.perf_counter()
            try:
                section = runners[name]()
            except Exception as exc:  # noqa: BLE001 - a benchmark reports, it never fails
                _say(f"{name} crashed: {exc!r}")
                results["errors"][name] = traceback.format_exc()
                continue
            section["section_seconds"] = round(time.perf_counter() - t0, 1)
            section["load_average_after"] = report.load_average()
            results["sections"][name] = section
            _say(f"{name} done in {section['section_seconds']} s")
    finally:
        if args.keep:
            _say(f"scratch kept at {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    results["machine"]["load_average_end"] = report.load_average()
    if args.only:
        results = report.merge_into_previous(results, args.only)
    json_path, md_path = report.write(results)
    print(report.summary(results))
    print(f"wrote {md_path} and {json_path} in {results['total_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
