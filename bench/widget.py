"""The website widget: how big it is on the wire, and how soon its launcher is painted.

- Size: the bytes ``GET /widget.js`` serves (a real chat process), raw and gzipped (level 9,
  what a compressing front end sends at best).
- First paint: Debian's Chromium (Playwright) loads the demo company page (its own origin,
  as a real site) with the widget tag, RUNS times in fresh browser contexts (nothing cached).
  An init script watches the DOM; once the widget's launcher is in the page it waits for the
  next frame (``requestAnimationFrame`` + a task: the frame is produced) and takes the time.
  The figure is that time minus ``responseEnd`` of the script's Resource Timing entry: from the
  script's bytes having arrived to its launcher on screen (parse, run, style, layout, paint).
"""

from __future__ import annotations

import gzip
import shutil
import urllib.request
from pathlib import Path

from bench.servers import bench_env, chat_server
from bench.stats import summarize_ms
from harness.demo_site import CHROMIUM_ARGS, DemoSiteProcess

RUNS = 15
QUICK_RUNS = 5
# Sets window.__launcherPainted (performance.now()) in the frame after the launcher appears.
PAINT_OBSERVER = """
new MutationObserver((_, observer) => {
  const host = document.querySelector('romega-chat');
  if (!host || !host.shadowRoot || !host.shadowRoot.querySelector('.launcher')) return;
  observer.disconnect();
  requestAnimationFrame(() => setTimeout(() => { window.__launcherPainted = performance.now(); }));
}).observe(document, {childList: true, subtree: true});
"""
PAINT_AFTER_LOAD = """url => {
  const entry = performance.getEntriesByName(url)[0];
  return window.__launcherPainted - entry.responseEnd;
}"""


def paint_delays(page_url: str, script_url: str, runs: int) -> list[float]:
    """Seconds from the widget script's arrival to its launcher's first frame, per page load."""
    from playwright.sync_api import sync_playwright

    delays = []
    with sync_playwright() as playwright:
        chromium = shutil.which("chromium") or "/usr/bin/chromium"
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            for _ in range(runs):
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                page = context.new_page()
                page.add_init_script(PAINT_OBSERVER)
                page.goto(page_url)
                page.wait_for_function("window.__launcherPainted !== undefined")
                delays.append(page.evaluate(PAINT_AFTER_LOAD, script_url) / 1000)
                context.close()
        finally:
            browser.close()
    return delays


def run(quick: bool, workdir: Path) -> dict:
    """Widget size and launcher paint time, against a real chat process and the demo page."""
    env = bench_env(SNAPSHOT_URI=workdir / "widget-bucket", SNAPSHOT_DIR=workdir / "widget-snap")
    with chat_server(env, workdir / "widget-chat.log") as chat:
        chat.wait_up()
        script_url = f"{chat.url}/widget.js"
        with urllib.request.urlopen(script_url, timeout=30) as response:
            served = response.read()
        with DemoSiteProcess(chat.url) as demo:
            delays = paint_delays(f"{demo.url}/", script_url, QUICK_RUNS if quick else RUNS)
    return {
        "bytes": len(served),
        "gzip_bytes": len(gzip.compress(served, 9)),
        "launcher_paint": summarize_ms(delays),
    }
