"""`python -m indexer build|publish|run`: build snapshots and publish them to a bucket."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from chatbot.config import Settings
from chatbot.embeddings import make_embedder
from chatbot.errors import ChatbotError
from chatbot.logs import configure_logging
from chatbot.snapshot import Manifest
from chatbot.storage import open_storage
from indexer.build import BuiltSnapshot, build_from_folder
from indexer.publish import publish

logger = logging.getLogger("indexer")


def _load_built(path: Path) -> BuiltSnapshot:
    manifest_path = path.with_suffix("").with_suffix(".json")
    if path.suffix == ".json":
        manifest_path, path = path, path.with_suffix(".tar.zst")
    return BuiltSnapshot(Manifest.parse(manifest_path.read_bytes()), path)


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
            built = _load_built(args.snapshot)
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
