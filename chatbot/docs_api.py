"""GET /openapi.json and GET /docs: the API document and Swagger UI, served by the function.

Swagger UI's files come from the swagger-ui-bundle-v2 package (a pinned requirement), so the
page works without reaching any CDN. Only the fixed list ``DOCS_ASSETS`` is served, each
under its own exact route: no file name from the request ever reaches the file system.
"""

from __future__ import annotations

import functools
import json
import threading

import flask

from chatbot.http import Reply, Route
from chatbot.openapi import DOCS_ASSETS

DOCS_PATH = "/docs"
OPENAPI_PATH = "/openapi.json"

_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Romega Chatbot API</title>
  <link rel="stylesheet" href="{DOCS_PATH}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{DOCS_PATH}/favicon-32x32.png" sizes="32x32">
  <link rel="icon" type="image/png" href="{DOCS_PATH}/favicon-16x16.png" sizes="16x16">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{DOCS_PATH}/swagger-ui-bundle.js"></script>
  <script src="{DOCS_PATH}/swagger-initializer.js"></script>
</body>
</html>
"""

# Replaces the package's own initializer, which loads the Petstore demo from the internet.
# validatorUrl null: Swagger UI would otherwise fetch a badge from validator.swagger.io.
_INITIALIZER = f"""window.addEventListener("load", function () {{
  window.ui = SwaggerUIBundle({{
    url: "{OPENAPI_PATH}",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  }});
}});
"""

# The browser itself refuses anything not served by this origin.
_PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)

_CONTENT_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".png": "image/png",
}


def read_asset(name: str) -> bytes:
    """The bytes of one allowed Swagger UI file."""
    if name not in DOCS_ASSETS:
        raise KeyError(name)
    if name == "swagger-initializer.js":
        return _INITIALIZER.encode()
    from swagger_ui_bundle import swagger_ui_path  # imported on first use: keeps cold start lean

    return (swagger_ui_path / name).read_bytes()


class DocsApi:
    """Serves one OpenAPI document and the Swagger UI page that renders it."""

    def __init__(self, document: dict) -> None:
        self._document = json.dumps(document).encode()
        self._assets: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def openapi(self, request: flask.Request) -> Reply:
        """GET /openapi.json: the OpenAPI 3.1 document."""
        return Reply({}, raw=self._document)

    def page(self, request: flask.Request) -> Reply:
        """GET /docs: the Swagger UI page."""
        return Reply(
            {},
            raw=_PAGE.encode(),
            content_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": _PAGE_POLICY, "X-Content-Type-Options": "nosniff"},
        )

    def asset(self, name: str, request: flask.Request) -> Reply:
        """GET /docs/<name>: one file of the allow-list, read once and kept in memory."""
        data = self._assets.get(name)
        if data is None:
            with self._lock:
                data = self._assets.get(name)
                if data is None:
                    data = self._assets[name] = read_asset(name)
        suffix = name[name.rindex(".") :]
        return Reply(
            {},
            raw=data,
            content_type=_CONTENT_TYPES[suffix],
            headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
        )

    def routes(self, rate: str) -> dict[str, dict[str, Route]]:
        """Route-table entries for the document, the page and each asset, limited by ``rate``."""
        table = {
            OPENAPI_PATH: {"GET": Route(self.openapi, rate)},
            DOCS_PATH: {"GET": Route(self.page, rate)},
        }
        for name in DOCS_ASSETS:
            table[f"{DOCS_PATH}/{name}"] = {"GET": Route(functools.partial(self.asset, name), rate)}
        return table
