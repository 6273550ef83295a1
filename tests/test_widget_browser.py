"""The website widget in real headless Chromium, on the demo company page, cross-origin.

Every test runs a real chat function process (functions-framework), the demo page
(scripts/demo_site.py, its own origin, with the CSP a site needs) and, where answers come
from Gemini, the fake Gemini HTTP server. Chromium is Debian's /usr/bin/chromium driven by
Playwright from PyPI (nothing downloads a browser); axe-core comes from axe-playwright-python.
Every page records its requests: the widget may reach the chat API and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from chatbot.bucket.publishing import publish
from chatbot.bucket.storage import LocalStorage
from chatbot.errors import FRIENDLY_GENERATION_ERROR
from harness.demo_site import CHROMIUM_ARGS, DemoSiteProcess
from harness.fake_gemini import STREAM, answer
from harness.processes import CHAT_SOURCE, FunctionProcess, free_port

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (run scripts/install-test-tools.sh)"
)
sync_api = pytest.importorskip("playwright.sync_api")

QUESTION = "What is the day rate for a senior consultant?"
HOSTILE_CSS = """
*, *::before, *::after { all: unset; }
* { color: #ff00ff !important; background: #ffff00 !important; font: 31px/3 "Comic Sans MS",
    cursive !important; letter-spacing: 4px !important; box-sizing: content-box !important; }
div, section, button, textarea, header, form { display: block !important; border: 6px solid red
    !important; padding: 9px !important; margin: 7px !important; position: static !important; }
html { font-size: 40px !important; }
:root { --accent: #ff0000 !important; --bg: #000 !important; --text: #0f0 !important; }
romega-chat { display: none !important; filter: invert(1) !important; opacity: .2 !important; }
"""


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@dataclass
class Site:
    """A chat function process and the demo page that embeds its widget."""

    chat: FunctionProcess
    demo: DemoSiteProcess
    bucket: Path
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def open_page(self, browser, **context_options):
        """A new browser context on the demo page, its requests and dialogs recorded."""
        context = browser.new_context(
            **{"viewport": {"width": 1280, "height": 800}} | context_options
        )
        page = context.new_page()
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.goto(self.demo.url)
        page.locator("romega-chat .launcher").wait_for()
        return page

    def assert_only_own_origins(self) -> None:
        """Nothing was requested but the demo page's own files and the chat API."""
        allowed = {origin(self.demo.url), origin(self.chat.url)}
        assert {origin(url) for url in self.requests} <= allowed, self.requests
        assert any(url.startswith(f"{self.chat.url}/widget.js") for url in self.requests)


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@pytest.fixture
def site(bucket, tmp_path, fake_gemini) -> Iterator:
    """``site(**env)``: the chat function (Gemini = the fake) and the demo page, started."""
    with contextlib.ExitStack() as stack:

        def start(storage: LocalStorage = bucket, **env: object) -> Site:
            demo_port = free_port()
            settings = {
                "SNAPSHOT_URI": storage.uri,
                "SNAPSHOT_DIR": str(tmp_path / "snap"),
                "ALLOWED_ORIGINS": f"http://127.0.0.1:{demo_port}",
                "GOOGLE_API_KEY": "fake-key",
                "GEMINI_BASE_URL": fake_gemini.url,
                "MAX_RETRIES": "0",
                "EVENTS_FLUSH_SECONDS": "0.2",
                **{key: str(value) for key, value in env.items()},
            }
            chat = FunctionProcess("chat", CHAT_SOURCE, settings, tmp_path / "chat.log")
            stack.enter_context(chat)
            chat.wait_healthy()
            demo = stack.enter_context(DemoSiteProcess(chat.url, demo_port))
            return Site(chat, demo, Path(storage.uri))

        yield start


def open_widget(page):
    page.get_by_role("button", name="Open chat: Romega Assistant").click()
    page.locator("romega-chat .panel").wait_for()


def ask(page, question: str = QUESTION) -> None:
    page.get_by_role("textbox", name="Your question").fill(question)
    page.keyboard.press("Enter")


def answers(page):
    return page.locator("romega-chat .msg.bot:not(.typing):not(.error)")


def stored(page, site: Site) -> dict:
    return page.evaluate(
        "key => JSON.parse(sessionStorage.getItem(key))", f"romega-chat:{site.chat.url}"
    )


def feedback_events(bucket: Path) -> list[dict]:
    lines = [line for f in bucket.rglob("events/**/*.jsonl") for line in f.read_text().splitlines()]
    return [e for e in map(json.loads, lines) if e["type"] == "feedback"]


def test_ask_stream_sources_rating_reload_and_new_conversation(site, browser, fake_gemini):
    fake_gemini.stream_delays(first_chunk=0.4, between_chunks=0.25)
    running = site()
    page = running.open_page(browser)
    open_widget(page)
    ask(page)

    reply = answers(page).nth(1)  # the greeting is the first
    # Sources come first, as links to the document's own public page, before any text.
    source = reply.get_by_role("link", name="Engagement Models and Pricing")
    source.wait_for()
    assert source.get_attribute("href") == "https://www.romega-solutions.com/pricing"
    assert page.locator("romega-chat .typing").count() == 1
    lengths = []
    helpful = page.get_by_role("button", name="Helpful", exact=True)
    while not helpful.is_visible():
        lengths.append(len(reply.locator("div").last.inner_text()))
        time.sleep(0.05)
    grown = sorted(set(lengths))
    assert len(grown) >= 3 and grown == sorted(grown), lengths  # the text grew while streaming
    assert page.locator("romega-chat .typing").count() == 0

    helpful.click()
    reply.get_by_text("Thanks for your feedback!").wait_for()
    answer_id = stored(page, running)["turns"][1]["answer_id"]
    text = reply.inner_text()
    page.reload()
    restored = answers(page).nth(1)
    restored.wait_for()  # the panel is still open, the conversation still there
    assert page.locator("romega-chat .msg.user").inner_text() == QUESTION
    assert restored.inner_text() == text
    assert page.get_by_role("button", name="Helpful", exact=True).get_attribute("aria-pressed") == (
        "true"
    )

    page.get_by_role("button", name="New conversation").click()
    assert page.locator("romega-chat .msg").count() == 1  # the greeting alone
    assert page.get_by_role("button", name="Where are your offices?").is_visible()
    assert stored(page, running)["turns"] == []
    running.assert_only_own_origins()

    # The rating reached the bucket: batched events are written at the latest at shutdown.
    running.chat.stop()
    assert [(e["answer_id"], e["rating"]) for e in feedback_events(running.bucket)] == [
        (answer_id, "up")
    ]


HOSTILE_ANSWER = (
    "Intro <script>window.__pwned = 'script'</script> **<b onmouseover=alert(1)>bold</b>**\n\n"
    "- <img src=x onerror=\"window.__pwned='img'\">\n"
    "- [click me](javascript:window.__pwned='link')\n"
    "- [data](data:text/html,<script>alert(1)</script>) <iframe src=javascript:alert(1)></iframe>\n"
    '- <svg onload="window.__pwned=\'svg\'"></svg> [a](https://ok.example/" onclick="alert(1))\n'
    "- [safe page](https://www.romega-solutions.com/about)"
)
HOSTILE_DOCUMENT = """---
url: javascript:window.__pwned='front-matter'
---
# Rates <img src=x onerror="window.__pwned='title'"><script>alert('title')</script>

Our rates are <script>window.__pwned='doc'</script> listed here. **[x](javascript:alert(1))**
<img src=x onerror="alert('doc')"> The senior consultant day rate is high.
"""


HOSTILE_PAGE = """<html><head><title>Offices &lt;img src=x onerror=alert(1)&gt;</title>
<link rel="canonical" href="javascript:window.__pwned='canonical'"></head>
<body><main><h1>Offices</h1><p>Our offices are in Rotterdam, Lisbon, Berlin and Dublin,
&lt;script&gt;window.__pwned='page'&lt;/script&gt; open on weekdays.</p></main></body></html>
"""


@pytest.fixture
def hostile_bucket(tmp_path, embedder) -> LocalStorage:
    from indexer.build import build_from_folder

    knowledge = tmp_path / "hostile-knowledge"
    knowledge.mkdir()
    (knowledge / "rates.md").write_text(HOSTILE_DOCUMENT)
    (knowledge / "offices.html").write_text(HOSTILE_PAGE)
    storage = LocalStorage(tmp_path / "hostile-bucket")
    publish(storage, build_from_folder(knowledge, embedder, tmp_path / "built", progress=False))
    return storage


def test_hostile_documents_and_answers_render_as_text_and_run_no_script(
    site, browser, fake_gemini, hostile_bucket
):
    fake_gemini.script([answer(HOSTILE_ANSWER)], method=STREAM)
    running = site(hostile_bucket)
    page = running.open_page(browser)
    open_widget(page)
    ask(page, "What is the senior consultant day rate?")
    page.get_by_role("button", name="Helpful", exact=True).wait_for()
    page.locator("romega-chat a").first.hover()
    page.locator("romega-chat .bot strong").hover()

    reply = answers(page).nth(1)
    text = reply.inner_text()
    assert "<script>window.__pwned = 'script'</script>" in text
    assert "<img src=x onerror=" in text and "[click me](javascript:" in text
    assert "Rates <img src=x onerror=" in text  # the document's title, as a source, as text
    shadow = "document.querySelector('romega-chat').shadowRoot"
    assert (
        page.evaluate(f"{shadow}.querySelectorAll('script, img, iframe, svg *[onload]').length")
        == 0
    )
    hrefs = page.evaluate(f"[...{shadow}.querySelectorAll('a')].map(a => a.href)")
    assert hrefs == ["https://www.romega-solutions.com/about"], hrefs
    assert page.evaluate("window.__pwned") is None
    assert running.dialogs == []
    running.assert_only_own_origins()


def widget_shots(page) -> list[bytes]:
    """The panel and the launcher, each clipped inside its rounded corners."""
    page.wait_for_function(  # the panel has risen into place
        "() => document.querySelector('romega-chat').shadowRoot.querySelector('.panel')"
        ".getAnimations().length === 0"
    )
    shots = []
    for selector, inset in (("romega-chat .panel", 18), ("romega-chat .launcher", 12)):
        box = page.locator(selector).bounding_box()
        clip = {
            "x": box["x"] + inset,
            "y": box["y"] + inset,
            "width": box["width"] - 2 * inset,
            "height": box["height"] - 2 * inset,
        }
        shots.append(page.screenshot(clip=clip, animations="disabled"))
    return shots


def test_aggressive_host_css_does_not_change_the_widget(site, browser, tmp_path):
    running = site()
    plain = running.open_page(browser)
    open_widget(plain)
    expected = widget_shots(plain)

    hostile = running.open_page(browser)
    hostile.route(
        f"{running.demo.url}/hostile.css",
        lambda r: r.fulfill(body=HOSTILE_CSS, content_type="text/css"),
    )
    hostile.evaluate(
        """() => new Promise(done => {
            const link = Object.assign(document.createElement('link'),
                {rel: 'stylesheet', href: '/hostile.css', onload: done});
            document.head.append(link);
        })"""
    )
    assert hostile.evaluate("getComputedStyle(document.body).color") == "rgb(255, 0, 255)"
    open_widget(hostile)
    got = widget_shots(hostile)
    for name, want, have in zip(("panel", "launcher"), expected, got, strict=True):
        if want != have:
            (tmp_path / f"{name}-plain.png").write_bytes(want)
            (tmp_path / f"{name}-hostile.png").write_bytes(have)
        assert want == have, f"the host's CSS changed the {name}; see {tmp_path}"


def test_rate_limit_shows_a_countdown_from_retry_after(site, browser):
    running = site(RATE_LIMIT_CHAT="1/minute")
    page = running.open_page(browser)
    open_widget(page)
    ask(page)
    page.get_by_role("button", name="Helpful", exact=True).wait_for()
    ask(page, "Where are your offices?")
    error = page.locator("romega-chat .error")
    error.get_by_text("You're sending questions faster than I can answer.").wait_for()
    first = int(error.get_by_text("You can ask again in").inner_text().split()[-2])
    assert 1 < first <= 60
    retry = error.get_by_role("button", name="Try again")
    assert retry.get_attribute("aria-disabled") == "true"
    assert page.locator("romega-chat .send").get_attribute("aria-disabled") == "true"
    page.wait_for_timeout(2100)
    later = int(error.get_by_text("You can ask again in").inner_text().split()[-2])
    assert later < first  # it counts down


def test_gemini_down_shows_the_friendly_message_and_retry_answers(site, browser, fake_gemini):
    fake_gemini.script([503], method=STREAM)
    running = site()
    page = running.open_page(browser)
    open_widget(page)
    ask(page)
    error = page.locator("romega-chat .error")
    error.get_by_text(FRIENDLY_GENERATION_ERROR).wait_for()
    error.get_by_role("button", name="Try again").click()  # Gemini is back
    page.get_by_role("button", name="Helpful", exact=True).wait_for()
    assert page.locator("romega-chat .error").count() == 0
    assert page.locator("romega-chat .msg.user").count() == 1  # the question was not repeated
    assert len(stored(page, running)["turns"]) == 2


def test_corrupt_saved_sources_still_mount_and_a_retry_waits_for_the_answer_in_progress(
    site, browser, fake_gemini
):
    running = site()
    page = running.open_page(browser)
    saved = {
        "open": True,
        "turns": [
            {"role": "user", "content": "Earlier question"},
            {"role": "assistant", "content": "Earlier answer", "sources": "not a list"},
            {"role": "user", "content": "Another"},
            {"role": "assistant", "content": "Another answer", "sources": [None, 3]},
        ],
    }
    page.evaluate(
        "([key, value]) => sessionStorage.setItem(key, value)",
        [f"romega-chat:{running.chat.url}", json.dumps(saved)],
    )
    page.reload()
    page.locator("romega-chat .msg.bot").get_by_text("Another answer").wait_for()

    fake_gemini.script([503], method=STREAM)
    ask(page)
    error = page.locator("romega-chat .error")
    error.get_by_text(FRIENDLY_GENERATION_ERROR).wait_for()
    fake_gemini.stream_delays(first_chunk=1.5)
    ask(page, "Where are your offices?")
    page.locator("romega-chat .typing").wait_for()
    error.get_by_role("button", name="Try again").click()  # busy: nothing happens yet
    assert page.locator("romega-chat .typing").count() == 1
    page.locator("romega-chat .typing").wait_for(state="detached", timeout=15_000)
    page.wait_for_timeout(500)
    roles = [turn["role"] for turn in stored(page, running)["turns"]]
    assert roles[4:] == ["user", "user", "assistant"], roles
    assert page.locator("romega-chat .error").count() == 1  # still there, to try once idle


def focused(page) -> str:
    """The class of the element focused inside the widget ('' when focus is elsewhere)."""
    return page.evaluate(
        "() => { const el = document.querySelector('romega-chat').shadowRoot.activeElement;"
        " return el ? (el.className || el.tagName.toLowerCase()) : ''; }"
    )


def test_keyboard_only_open_ask_read_close(site, browser):
    running = site()
    page = running.open_page(browser)
    for _ in range(40):  # the launcher is the last thing on the page
        page.keyboard.press("Tab")
        if focused(page) == "launcher":
            break
    assert focused(page) == "launcher"
    outline = page.evaluate(
        "getComputedStyle(document.querySelector('romega-chat').shadowRoot.activeElement)"
        ".outlineStyle"
    )
    assert outline != "none"  # focus is visible
    page.keyboard.press("Enter")
    assert focused(page) == "textarea"  # opening puts the caret in the question box
    page.keyboard.type(QUESTION)
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Helpful", exact=True).wait_for()
    said = stored(page, running)["turns"][1]["content"]
    page.wait_for_function(  # the live region reads the whole answer once it is complete
        "said => document.querySelector('romega-chat').shadowRoot"
        ".querySelector('[role=status]').textContent === said",
        arg=said,
    )
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")  # back through the conversation to the header
    page.keyboard.press("Escape")
    assert page.locator("romega-chat .panel").is_hidden()
    assert focused(page) == "launcher"  # focus returns to the launcher


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_serious_violations_in_the_open_widget(site, browser, scheme):
    from axe_playwright_python.sync_playwright import Axe

    running = site()
    page = running.open_page(browser, color_scheme=scheme)
    open_widget(page)
    ask(page)
    page.get_by_role("button", name="Helpful", exact=True).wait_for()
    results = Axe().run(page, context="romega-chat")
    serious = [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]])
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert serious == []
    assert results.response["passes"], "axe checked nothing"


def test_phone_full_screen_dark_mode_and_reduced_motion(site, browser):
    running = site()
    phone = running.open_page(
        browser,
        viewport={"width": 375, "height": 740},
        color_scheme="dark",
        reduced_motion="reduce",
    )
    open_widget(phone)
    box = phone.locator("romega-chat .panel").bounding_box()
    assert (box["x"], box["y"], box["width"], box["height"]) == (0, 0, 375, 740)
    style = (
        "getComputedStyle(document.querySelector('romega-chat').shadowRoot.querySelector('.panel'))"
    )
    assert phone.evaluate(f"{style}.backgroundColor") == "rgb(21, 25, 30)"  # dark
    assert phone.evaluate(f"{style}.animationName") == "none"  # no motion

    desktop = running.open_page(browser, color_scheme="light")
    open_widget(desktop)
    assert desktop.evaluate(f"{style}.backgroundColor") == "rgb(255, 255, 255)"
    assert desktop.evaluate(f"{style}.animationName") == "rise"
    assert desktop.locator("romega-chat .panel").bounding_box()["width"] == 380
