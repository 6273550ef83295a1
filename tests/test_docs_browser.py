"""GET /docs renders in a real headless Chromium, from this function's own assets only.

Chromium is Debian's package, installed by scripts/install-test-tools.sh. The page's
Content-Security-Policy allows only this origin, so a render that shows the operations also
shows that no CDN was needed.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from harness.processes import FunctionProcess
from tests.conftest import CHAT_SOURCE

CHROMIUM = shutil.which("chromium")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (run scripts/install-test-tools.sh)"
)


def chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    """Run headless Chromium once on ``url`` with no network beyond loopback traffic."""
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1280,2000",
        "--virtual-time-budget=5000",
        *extra,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def docs_server(bucket, tmp_path):
    env = {"SNAPSHOT_URI": bucket.uri, "SNAPSHOT_DIR": str(tmp_path / "snap")}
    with FunctionProcess("chat", CHAT_SOURCE, env, tmp_path / "chat.log") as proc:
        yield proc


def test_docs_render_the_operations_in_chromium(docs_server, tmp_path):
    url = f"{docs_server.url}/docs"
    dom = chromium(url, tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    # Swagger UI has run: it rendered an operation block per route, with its path.
    assert 'class="swagger-ui' in html, html[:2000]
    assert 'data-path="/chat"' in html and "opblock-post" in html, html[-3000:]
    for path in ("/health", "/cache/stats", "/openapi.json"):
        assert f'data-path="{path}"' in html, path
    assert "Romega Chatbot API" in html
    assert "Unable to render this definition" not in html

    shot = tmp_path / "docs.png"
    run = chromium(url, tmp_path / "profile-shot", f"--screenshot={shot}")
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 2000)
    # A page with one heading is ~15 kB; the rendered Swagger UI is several times that.
    assert len(data) > 50_000, f"the screenshot is nearly blank ({len(data)} bytes)"
