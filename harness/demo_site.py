"""The demo company page (scripts/demo_site.py) in its own process, for tests and the bench."""

from __future__ import annotations

import subprocess
import sys

from harness.processes import ROOT, spawn_announced, stop_group
from harness.running import Running

__all__ = ["CHROMIUM_ARGS", "DemoSiteProcess"]
# Debian's Chromium as Playwright launches it for the widget (tests, bench, screenshot): no
# sandbox (root), and none of the background traffic this machine's closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class DemoSiteProcess(Running):
    """``scripts/demo_site.py`` on ``port`` (0: a free one) with the widget tag at ``chat_url``."""

    def __init__(self, chat_url: str, port: int = 0) -> None:
        self.chat_url = chat_url
        self.port = port
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> DemoSiteProcess:
        """Spawn it and read its URL from its first line."""
        self.process, self.url = spawn_announced(
            [sys.executable, str(ROOT / "scripts" / "demo_site.py")]
            + ["--port", str(self.port), "--chat-url", self.chat_url],
            "the demo site",
        )
        return self

    def stop(self) -> None:
        """Stop the process."""
        if self.process is not None:
            stop_group(self.process)
            self.process = None
