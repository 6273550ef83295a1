"""Stage and zip each Cloud Function: build/<function>/ and build/<function>.zip.

A function's zip holds its main.py, a copy of chatbot/, requirements.txt and, for the chat
function, the embedding model files and widget/widget.js (beside chatbot/, as in the repo), so
the deployed code needs nothing else from this repo.
Zips are byte-for-byte reproducible (sorted entries, fixed timestamps), so terraform's
content-hash object names change only when the code does.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatbot.answering.embeddings import find_model_files  # noqa: E402

FUNCTIONS = {"chat": True, "admin": False}  # name -> ships the embedding model and the widget
FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def _ignore(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in {"__pycache__", "model"} or n.endswith((".pyc", ".pyo"))}


def stage(name: str, out: Path, with_model: bool) -> Path:
    """Lay out build/<name>/ exactly as Cloud Functions will see it."""
    target = out / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shutil.copyfile(ROOT / "functions" / name / "main.py", target / "main.py")
    shutil.copyfile(ROOT / "requirements.txt", target / "requirements.txt")
    shutil.copytree(ROOT / "chatbot", target / "chatbot", ignore=_ignore)
    if with_model:
        files = find_model_files()
        model_dir = target / "chatbot" / "model"
        model_dir.mkdir()
        shutil.copyfile(files.onnx, model_dir / "model.onnx")
        shutil.copyfile(files.tokenizer, model_dir / "tokenizer.json")
        (target / "widget").mkdir()
        shutil.copyfile(ROOT / "widget" / "widget.js", target / "widget" / "widget.js")
    return target


def zip_dir(source: Path, dest: Path) -> Path:
    """A reproducible zip of ``source``."""
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(source).as_posix(), FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, with_model in FUNCTIONS.items():
        staged = stage(name, args.out, with_model)
        archive = zip_dir(staged, args.out / f"{name}.zip")
        print(f"{archive} ({archive.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
