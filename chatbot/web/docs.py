"""GET /openapi.json and GET /docs: the API document and Swagger UI, served by the function.

Swagger UI's files come from the swagger-ui-bundle-v2 package (a pinned requirement), so the
page works without reaching any CDN. Only the fixed list ``DOCS_ASSETS`` is served, each
under its own exact route: no file name from the request ever reaches the file system.
"""

from __future__ import annotations

import functools
import json

import flask

from chatbot.lazy import Lazy
from chatbot.web.router import Reply, Route

__all__ = ["DOCS_ASSETS", "DOCS_PATH", "OPENAPI_PATH", "DocsHandlers"]

DOCS_PATH = "/docs"
OPENAPI_PATH = "/openapi.json"
# The files of the swagger-ui-bundle-v2 package that GET /docs needs, plus our own
# initializer; these and nothing else are served.
DOCS_ASSETS = (
    "swagger-ui.css",
    "swagger-ui-bundle.js",
    "swagger-initializer.js",
    "favicon-32x32.png",
    "favicon-16x16.png",
)

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


class DocsHandlers:
    """Serves one OpenAPI document and the Swagger UI page that renders it."""

    def __init__(self, document: dict) -> None:
        self._document = json.dumps(document).encode()
        self._assets = {name: Lazy(functools.partial(read_asset, name)) for name in DOCS_ASSETS}

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
        data = self._assets[name].get()
        suffix = name[name.rindex(".") :]
        return Reply(
            {},
            raw=data,
            content_type=_CONTENT_TYPES[suffix],
            headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
        )

    def document_routes(self, rate: str) -> dict[str, dict[str, Route]]:
        """The route of the OpenAPI document alone, limited by ``rate``."""
        return {OPENAPI_PATH: {"GET": Route(self.openapi, rate)}}

    def routes(self, rate: str) -> dict[str, dict[str, Route]]:
        """The document, the Swagger UI page and each of its assets, limited by ``rate``."""
        table = {**self.document_routes(rate), DOCS_PATH: {"GET": Route(self.page, rate)}}
        for name in DOCS_ASSETS:
            asset = functools.partial(self.asset, name)
            table[f"{DOCS_PATH}/{name}"] = {"GET": Route(asset, rate, listed=False)}
        return table
