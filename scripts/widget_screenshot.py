"""docs/widget.png: the demo company page with the widget open and one question answered.

Real parts only: the sample knowledge snapshot (built into a scratch bucket), a chat function
process with the offline extractive answerer, the demo page on its own origin, and Debian's
Chromium driven by Playwright. Run: ``.venv/bin/python scripts/widget_screenshot.py``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatbot.answering.embeddings import OnnxEmbedder  # noqa: E402
from chatbot.bucket.publishing import publish  # noqa: E402
from chatbot.bucket.storage import LocalStorage  # noqa: E402
from harness.demo_site import CHROMIUM_ARGS, DemoSiteProcess  # noqa: E402
from harness.processes import CHAT_SOURCE, FunctionProcess, free_port  # noqa: E402
from indexer.build import build_from_folder  # noqa: E402

QUESTION = "What is the day rate for a senior consultant?"


def shoot(out: Path, scratch: Path) -> None:
    """Build, serve, ask once in Chromium and save the page as ``out``."""
    from playwright.sync_api import sync_playwright

    storage = LocalStorage(scratch / "bucket")
    publish(storage, build_from_folder(ROOT / "knowledge", OnnxEmbedder(), scratch / "built"))
    demo_port = free_port()
    env = {
        "SNAPSHOT_URI": storage.uri,
        "SNAPSHOT_DIR": str(scratch / "snap"),
        "ALLOWED_ORIGINS": f"http://127.0.0.1:{demo_port}",
    }
    with (
        FunctionProcess("chat", CHAT_SOURCE, env, scratch / "chat.log") as chat,
        DemoSiteProcess(chat.url, demo_port) as demo,
        sync_playwright() as playwright,
    ):
        chat.wait_healthy()
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(demo.url)
        page.get_by_role("button", name="Open chat: Romega Assistant").click()
        page.get_by_role("textbox", name="Your question").fill(QUESTION)
        page.keyboard.press("Enter")
        page.get_by_role("button", name="Helpful", exact=True).wait_for()
        page.get_by_role("textbox", name="Your question").blur()
        page.screenshot(path=str(out), animations="disabled")
        browser.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        shoot(ROOT / "docs" / "widget.png", Path(scratch))
    print(ROOT / "docs" / "widget.png")
