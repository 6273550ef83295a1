"""The demo company page (widget/demo/) on its own port: the widget as a real site embeds it.

``make run`` serves it beside the chat function, so the widget runs cross-origin, as on a
company's site: ``python scripts/demo_site.py --port 8082 --chat-url http://127.0.0.1:8080``.
It prints ``listening on <url>`` once it accepts connections. Only the files of widget/demo/
are served (a fixed list read at start-up: no request path reaches the file system); every
``{{CHAT_URL}}`` in them becomes ``--chat-url``. Pages carry the Content-Security-Policy a
site needs for the widget (README, "The website widget"): scripts from here and the chat
origin, connections to the chat origin only, so the browser itself refuses anything else.
"""

from __future__ import annotations

import argparse
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

DEMO = Path(__file__).resolve().parent.parent / "widget" / "demo"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8"}


def site_policy(chat_origin: str) -> str:
    """The CSP of the demo pages: the widget's needs and nothing more."""
    return (
        f"default-src 'self'; script-src 'self' {chat_origin}; connect-src {chat_origin}; "
        "style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'"
    )


def load_pages(chat_url: str) -> dict[str, tuple[bytes, str]]:
    """URL path -> (body, content type) for every file of widget/demo/, the chat URL filled in."""
    pages = {}
    for path in sorted(DEMO.iterdir()):
        if path.suffix in CONTENT_TYPES:
            body = path.read_text(encoding="utf-8").replace("{{CHAT_URL}}", chat_url)
            pages[f"/{path.name}"] = (body.encode(), CONTENT_TYPES[path.suffix])
    pages["/"] = pages["/index.html"]
    return pages


def make_server(host: str, port: int, chat_url: str) -> ThreadingHTTPServer:
    """A server for the demo pages on ``host``:``port`` (0: any free port)."""
    parts = urlsplit(chat_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SystemExit(f"--chat-url must be an http(s) URL, got {chat_url!r}")
    chat_url = chat_url.rstrip("/")
    pages = load_pages(chat_url)
    policy = site_policy(f"{parts.scheme}://{parts.netloc}")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real site's server

        def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
            page = pages.get(self.path.split("?", 1)[0])
            body, content_type = page or (b"Not found\n", "text/plain; charset=utf-8")
            self.send_response(200 if page else 404)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Security-Policy", policy)
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib name)
            pass

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--chat-url", required=True, help="where the chat function listens")
    args = parser.parse_args(argv)
    server = make_server(args.host, args.port, args.chat_url)
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
