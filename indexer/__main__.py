"""`python -m indexer build|publish|run|insights`: build snapshots, publish them to a bucket,
and report what visitors asked (docs/insights.md).

`run` is incremental: it reuses the vectors of unchanged chunks from the snapshot LATEST names
in the target bucket (indexer/incremental.py); `run --full` and `build` embed everything.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from chatbot.answering.embeddings import make_embedder
from chatbot.bucket.publishing import BuiltSnapshot, publish
from chatbot.bucket.storage import open_storage
from chatbot.config import Settings
from chatbot.errors import ChatbotError
from chatbot.insights.html import render_html
from chatbot.insights.report import WEAK_SCORE, build_report, write_eval_cases
from chatbot.insights.snapshot import latest_index
from chatbot.logs import configure_logging
from indexer.build import build_from_folder

logger = logging.getLogger("indexer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m indexer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build and verify a snapshot into --out")
    run = sub.add_parser("run", help="build, verify and publish")
    pub = sub.add_parser("publish", help="publish a built snapshot (.tar.zst or its .json)")
    pub.add_argument("snapshot", type=Path)
    for p in (build, run):
        p.add_argument("--knowledge", type=Path, default=Path("knowledge"))
        p.add_argument("--out", type=Path, default=Path("build/snapshots"))
        p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    for p in (run, pub):
        p.add_argument("--to", help="SNAPSHOT_URI to publish to (default: $SNAPSHOT_URI)")
    run.add_argument(
        "--full", action="store_true", help="embed every chunk, reusing nothing from LATEST"
    )
    insights = sub.add_parser("insights", help="report on the events of the last --days days")
    insights.add_argument("--from", dest="source", help="SNAPSHOT_URI (default: $SNAPSHOT_URI)")
    insights.add_argument("--days", type=_days, default=7, help="UTC days, today included")
    insights.add_argument("--out", type=Path, default=Path("build/insights"))
    insights.add_argument("--weak-score", type=float, default=WEAK_SCORE)
    insights.add_argument("--export-eval", type=Path, metavar="FILE", help="write cases to label")
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env(os.environ)
        configure_logging(settings)
        if args.command == "insights":
            return _insights(args, settings)
        storage = None
        if args.command in ("run", "publish"):
            storage = open_storage(args.to or settings.snapshot_uri)
        if args.command == "publish":
            built = BuiltSnapshot.load(args.snapshot)
        else:
            embedder = make_embedder(settings.embedding_backend, settings, indexing=True)
            reuse_from = storage if args.command == "run" and not args.full else None
            built = build_from_folder(
                args.knowledge, embedder, args.out, progress=args.progress, reuse_from=reuse_from
            )
            print(_built_line(built))
        if storage is not None:
            version = publish(storage, built)
            print(f"published {version} -> {storage.uri}")
    except (ChatbotError, OSError) as exc:
        # Gemini errors carry the visitor's friendly text as their message, the cause in detail.
        print(f"indexer: error: {getattr(exc, 'detail', None) or exc}", file=sys.stderr)
        return 1
    return 0


def _built_line(built: BuiltSnapshot) -> str:
    """What a build did: its version, and the reused / embedded / removed counts."""
    manifest = built.manifest
    reuse = manifest.data["reuse"]
    line = (
        f"built {manifest.version} ({manifest.chunks} chunks: reused {reuse['reused']}, "
        f"embedded {reuse['embedded']}, removed {reuse['removed']}) -> {built.archive}"
    )
    if reuse["base"] is not None:
        return f"{line}\nreused vectors from {reuse['base']}"
    return f"{line}\nfull build: {reuse['full_build_reason']}"


def _days(text: str) -> int:
    days = int(text)
    if days < 1:
        raise argparse.ArgumentTypeError("--days must be at least 1")
    return days


def _insights(args: argparse.Namespace, settings: Settings) -> int:
    """Write insights.json and insights.html for the period into --out."""
    storage = open_storage(args.source or settings.snapshot_uri)
    embedder = make_embedder(settings.embedding_backend, settings)
    with latest_index(storage, embedder) as snapshot:
        report = build_report(
            storage,
            days=args.days,
            now=datetime.now(UTC),
            embedder=embedder,
            snapshot=snapshot,
            weak_score=args.weak_score,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "insights.json").write_text(report.model_dump_json(indent=2), encoding="utf-8")
    (args.out / "insights.html").write_text(render_html(report), encoding="utf-8")
    totals = report.totals
    print(
        f"{totals.questions} questions, {totals.unanswered} unanswered in "
        f"{len(report.unanswered_groups)} groups, {report.ratings.down} rated down -> "
        f"{args.out}/insights.json, insights.html"
    )
    if args.export_eval:
        cases = write_eval_cases(report, args.export_eval)
        print(f"{cases} cases to label -> {args.export_eval}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
