"""Stage and zip each Cloud Function: build/<function>/ and build/<function>.zip.

A function's zip holds its main.py, a copy of chatbot/, its requirements.txt and the embedding
model files, and the chat function's also widget/widget.js (beside chatbot/, as in the repo),
so the deployed code needs nothing else from this repo. The admin function's
requirements.txt is requirements.txt plus requirements-admin.txt (DuckDB for GET /insights,
which also embeds questions with the chat's model); the chat function installs no more than
it needs.
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

# name -> the requirements files its requirements.txt is made of (one self-contained list)
FUNCTIONS = {
    "chat": ("requirements.txt",),
    "admin": ("requirements.txt", "requirements-admin.txt"),
}
FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def _ignore(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in {"__pycache__", "model"} or n.endswith((".pyc", ".pyo"))}


def stage(name: str, out: Path, requirements: tuple[str, ...]) -> Path:
    """Lay out build/<name>/ exactly as Cloud Functions will see it."""
    target = out / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shutil.copyfile(ROOT / "functions" / name / "main.py", target / "main.py")
    listed = "".join((ROOT / part).read_text() for part in requirements)
    (target / "requirements.txt").write_text(listed)
    shutil.copytree(ROOT / "chatbot", target / "chatbot", ignore=_ignore)
    files = find_model_files()
    model_dir = target / "chatbot" / "model"
    model_dir.mkdir()
    shutil.copyfile(files.onnx, model_dir / "model.onnx")
    shutil.copyfile(files.tokenizer, model_dir / "tokenizer.json")
    if name == "chat":
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
    for name, requirements in FUNCTIONS.items():
        staged = stage(name, args.out, requirements)
        archive = zip_dir(staged, args.out / f"{name}.zip")
        print(f"{archive} ({archive.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
