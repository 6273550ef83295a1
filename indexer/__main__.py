"""`python -m indexer build|publish|run`: build snapshots and publish them to a bucket."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from chatbot.answering.embeddings import make_embedder
from chatbot.bucket.publishing import BuiltSnapshot, publish
from chatbot.bucket.storage import open_storage
from chatbot.config import Settings
from chatbot.errors import ChatbotError
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
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env(os.environ)
        configure_logging(settings)
        if args.command == "publish":
            built = BuiltSnapshot.load(args.snapshot)
        else:
            embedder = make_embedder(settings.embedding_backend, settings)
            built = build_from_folder(args.knowledge, embedder, args.out, progress=args.progress)
            manifest = built.manifest
            print(f"built {manifest.version} ({manifest.chunks} chunks) -> {built.archive}")
        if args.command in ("run", "publish"):
            storage = open_storage(args.to or settings.snapshot_uri)
            version = publish(storage, built)
            print(f"published {version} -> {storage.uri}")
    except (ChatbotError, OSError) as exc:
        print(f"indexer: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
