"""GET /widget.js: the website widget, one file served as it is in the repository.

``widget/widget.js`` has no build step; ``scripts/package.py`` puts it at the same place
relative to ``chatbot/`` in the chat zip, so one path finds it in both. The reply carries a
content-hash ``ETag`` (a revalidation is a 304 without a body) and may be cached publicly for
``CACHE_SECONDS``: the URL has no version in it, so a fixed widget reaches visitors within
that time, and each revalidation after it costs a few bytes.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import flask

from chatbot.lazy import Lazy
from chatbot.web.router import Reply, Route

__all__ = ["WIDGET_FILE", "WIDGET_PATH", "WidgetHandlers"]

WIDGET_PATH = "/widget.js"
WIDGET_FILE = Path(__file__).resolve().parents[2] / "widget" / "widget.js"
CACHE_SECONDS = 3600


@dataclass(frozen=True)
class Script:
    """The widget's bytes and their content-hash ETag."""

    data: bytes
    etag: str


def read_script(path: Path = WIDGET_FILE) -> Script:
    """The widget file and its ETag (the first 32 hex digits of its sha256, quoted)."""
    data = path.read_bytes()
    return Script(data, f'"{hashlib.sha256(data).hexdigest()[:32]}"')


class WidgetHandlers:
    """Serves the widget file, read once per instance."""

    def __init__(self, path: Path = WIDGET_FILE) -> None:
        self._script = Lazy(functools.partial(read_script, path))

    def widget(self, request: flask.Request) -> Reply:
        """GET /widget.js: the script, or 304 when the browser holds this version."""
        script = self._script.get()
        headers = {
            "ETag": script.etag,
            "Cache-Control": f"public, max-age={CACHE_SECONDS}",
            "X-Content-Type-Options": "nosniff",
            # Sites that isolate themselves (COEP) may still load it with a plain script tag.
            "Cross-Origin-Resource-Policy": "cross-origin",
        }
        content_type = "text/javascript; charset=utf-8"
        if request.if_none_match.contains_weak(script.etag.strip('"')):
            return Reply({}, 304, headers, raw=b"", content_type=content_type)
        return Reply({}, raw=script.data, content_type=content_type, headers=headers)

    def routes(self, rate: str) -> dict[str, dict[str, Route]]:
        """The widget's route, limited by ``rate``."""
        return {WIDGET_PATH: {"GET": Route(self.widget, rate)}}
