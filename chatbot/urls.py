"""The one rule for a link the chatbot hands out: an absolute http(s) URL, or nothing.

The indexer applies it to the URLs documents name (front matter, canonical links), and the
chat function again to the ``url`` a snapshot's metadata holds, since a snapshot may have
been written by anyone with access to the bucket: no ``javascript:`` or ``data:`` URL ever
reaches an API client, whatever rendering it does.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["public_url"]


def public_url(candidate: object) -> str:
    """``candidate`` if it is an absolute http(s) URL, else empty: no other scheme is linked."""
    if not isinstance(candidate, str):
        return ""
    try:
        parts = urlsplit(candidate)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return ""
    return candidate if parts.scheme in ("http", "https") and parts.netloc else ""
