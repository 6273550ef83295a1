"""GET /widget.js: the widget file, cacheable and revalidated by its content hash, and small.

The widget's behaviour in a browser is tests/test_widget_browser.py; this file holds the
serving contract and what can be read off the source alone.
"""

from __future__ import annotations

import gzip
import hashlib
import re

from chatbot.web.widget import WIDGET_FILE

SOURCE = WIDGET_FILE.read_text(encoding="utf-8")


def test_the_widget_is_served_with_a_content_hash_etag_and_cache_headers(chat_client):
    client = chat_client()
    resp = client.get("/widget.js")
    assert resp.status_code == 200
    assert resp.data == WIDGET_FILE.read_bytes()
    assert resp.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert resp.headers["ETag"] == f'"{hashlib.sha256(resp.data).hexdigest()[:32]}"'
    assert resp.headers["Cache-Control"].startswith("public, max-age=")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "X-RateLimit-Limit" in resp.headers  # limited like the other info routes


def test_a_browser_holding_this_version_gets_304_without_a_body(chat_client):
    client = chat_client()
    etag = client.get("/widget.js").headers["ETag"]
    same = client.get("/widget.js", headers={"If-None-Match": etag})
    assert same.status_code == 304 and same.data == b""
    assert same.headers["ETag"] == etag
    weak = client.get("/widget.js", headers={"If-None-Match": f'W/{etag}, "other"'})
    assert weak.status_code == 304
    stale = client.get("/widget.js", headers={"If-None-Match": '"an-older-version"'})
    assert stale.status_code == 200 and stale.data == WIDGET_FILE.read_bytes()


def test_the_widget_is_limited_per_client(chat_client):
    client = chat_client(RATE_LIMIT_INFO="2/minute")
    assert [client.get("/widget.js").status_code for _ in range(3)] == [200, 200, 429]


def test_the_widget_is_at_most_20_kb_gzipped():
    assert len(gzip.compress(WIDGET_FILE.read_bytes(), 9)) <= 20 * 1024


def test_the_source_never_parses_strings_as_html_or_code():
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        'setAttribute("on',
        "srcdoc",
    ):
        assert sink not in SOURCE, sink


def test_the_source_names_no_other_origin():
    # Only the W3C SVG namespace (an identifier, never fetched) is an absolute URL in it.
    urls = set(re.findall(r"https?://[^\s\"'`<>]+", SOURCE))
    assert urls <= {"http://www.w3.org/2000/svg", "https://<chat-url>/widget.js"}, urls
