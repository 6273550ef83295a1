"""The deployable zips: each function starts from its unpacked zip alone."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
import zipfile

import pytest

from harness.processes import FunctionProcess, request
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    out = tmp_path_factory.mktemp("package")
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "package.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


def unpack(zip_path, dest):
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(dest)
    return dest


def test_zips_hold_main_chatbot_requirements_and_the_model(packaged):
    chat = set(zipfile.ZipFile(packaged / "chat.zip").namelist())
    admin = set(zipfile.ZipFile(packaged / "admin.zip").namelist())
    for names in (chat, admin):
        assert {"main.py", "requirements.txt", "chatbot/__init__.py", "chatbot/web/app.py"} <= names
        assert not any(
            "__pycache__" in n or n.startswith(("tests/", "indexer/", "harness/")) for n in names
        )
    model = {"chatbot/model/model.onnx", "chatbot/model/tokenizer.json"}
    assert model <= chat and model <= admin  # the admin embeds questions for GET /insights
    assert "widget/widget.js" in chat and not any(n.startswith("widget/") for n in admin)
    assert "chatbot/insights/templates/report.html.j2" in admin


def test_only_the_admin_function_installs_duckdb(packaged):
    """DuckDB serves GET /insights; the public chat function never installs or imports it."""
    pins = {}
    for name in ("chat", "admin"):
        with zipfile.ZipFile(packaged / f"{name}.zip") as zf:
            text = zf.read("requirements.txt").decode()
        pins[name] = {line.split("==")[0] for line in text.splitlines() if "==" in line}
    assert pins["admin"] - pins["chat"] == {"duckdb", "jinja2"}
    blocked = "import sys; sys.modules['duckdb'] = None; import main"
    src = unpack(packaged / "chat.zip", packaged / "chat-import")
    env = {**os.environ, "PYTHONPATH": ""}  # the zip's own chatbot/, not the repository's
    run = subprocess.run(
        [sys.executable, "-c", blocked],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]


def test_function_zips_ship_no_indexer_dependencies(packaged):
    """Document parsing (selectolax) and progress bars (tqdm) are the indexer's alone."""
    for name in ("chat.zip", "admin.zip"):
        with zipfile.ZipFile(packaged / name) as zf:
            requirements = zf.read("requirements.txt").decode()
            sources = "\n".join(zf.read(n).decode() for n in zf.namelist() if n.endswith(".py"))
        packages = {line.split("==")[0] for line in requirements.splitlines() if "==" in line}
        assert "chromadb" in packages and "pydantic" in packages
        assert not packages & {"selectolax", "tqdm"}, name
        assert "-r " not in requirements  # one self-contained list, as Cloud Functions reads it
        assert "selectolax" not in sources and "tqdm" not in sources


def test_packaging_is_reproducible(packaged, tmp_path):
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "package.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    for name in ("chat.zip", "admin.zip"):
        assert (tmp_path / name).read_bytes() == (packaged / name).read_bytes()


def test_the_unpacked_chat_zip_serves_on_its_own(packaged, bucket, tmp_path):
    src = unpack(packaged / "chat.zip", tmp_path / "chat")
    env = {"PYTHONPATH": "", "SNAPSHOT_URI": bucket.uri, "SNAPSHOT_DIR": str(tmp_path / "snap")}
    with FunctionProcess("chat", src / "main.py", env, tmp_path / "chat.log", cwd=src) as proc:
        health = proc.wait_healthy()
        assert health["status"] == "healthy" and health["snapshot"]["chunks"] > 50
        status, body, _ = request("POST", f"{proc.url}/chat", {"message": "Who founded Romega?"})
        assert status == 200 and body["sources"]
        with urllib.request.urlopen(f"{proc.url}/widget.js", timeout=30) as widget:
            assert widget.read() == (ROOT / "widget" / "widget.js").read_bytes()
        assert str(ROOT) not in proc.log()  # nothing was imported from the repository


def test_the_unpacked_admin_zip_serves_on_its_own(packaged, bucket, tmp_path):
    src = unpack(packaged / "admin.zip", tmp_path / "admin")
    token = "package-test-token-3f9d2c7a1e5b8046"  # ADMIN_TOKEN needs 32 characters or more
    env = {"PYTHONPATH": "", "SNAPSHOT_URI": bucket.uri, "ADMIN_TOKEN": token}
    with FunctionProcess("admin", src / "main.py", env, tmp_path / "admin.log", cwd=src) as proc:
        status, body, _ = request("GET", f"{proc.url}/snapshots", headers={"X-Admin-Token": token})
        assert status == 200, body
